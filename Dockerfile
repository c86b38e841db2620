# One image for every job of clickstream-dataflows:
#   docker run IMAGE clicks            (or: -e JOB=clicks)   -> python -m bytewax.run dataflows.clicks
# deploy/entrypoint.sh runs the package's launcher (python -m clickstream.launch),
# which derives the Bytewax process id, peer addresses and recovery flags from
# the environment: see docs/deploy.md.
#
# Bytewax 0.21.1 has wheels for CPython <= 3.12 only (manylinux_2_31: glibc >= 2.31),
# so the base stays on 3.12, pinned to an exact patch release.
FROM python:3.12.15-slim-bookworm

# BYTEWAX_DATAFLOW_API_CACHE_PATH: where Bytewax's dataflow API server (probes,
# Prometheus /metrics) writes dataflow.json; /tmp stays writable with a
# read-only root filesystem (an emptyDir in Kubernetes).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp

# Runtime dependencies are pinned exactly in pyproject.toml; their own
# dependencies are pinned here (the versions the test suite ran with), and the
# build backend too, so a rebuild installs the same set.
COPY pyproject.toml README.md /src/
COPY clickstream /src/clickstream
COPY dataflows /src/dataflows
COPY operators /src/operators
WORKDIR /src
RUN pip install --no-cache-dir "setuptools==80.9.0" "wheel==0.45.1" \
    && pip install --no-cache-dir --no-build-isolation . \
        "annotated-types==0.8.0" \
        "prometheus-client==0.26.0" \
        "pydantic-core==2.50.4" \
        "python-dotenv==1.2.4" \
        "typing-extensions==4.16.0" \
        "typing-inspection==0.4.5" \
    && pip uninstall --yes setuptools wheel \
    && rm -rf /src

# Non-root user; /data/recovery is where the recovery volume is mounted.
RUN groupadd --system --gid 10001 dataflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin dataflow \
    && mkdir -p /data/recovery \
    && chown 10001:10001 /data/recovery

WORKDIR /app
COPY deploy/entrypoint.sh /app/deploy/
RUN chmod 0755 /app/deploy/entrypoint.sh

USER 10001:10001
# 2101: Bytewax cluster port between processes; 3030: Bytewax dataflow API
# (/metrics, /dataflow) when BYTEWAX_DATAFLOW_API_ENABLED=true.
EXPOSE 2101 3030
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
