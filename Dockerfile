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

# Runtime dependencies, transitive ones included, are pinned exactly in
# requirements.lock (generated from pyproject.toml by `make lock`; `make setup`
# installs the same versions for the tests), and the build backend here, so a
# rebuild installs the same set. The package itself adds no dependency (--no-deps).
COPY pyproject.toml README.md requirements.lock /src/
COPY clickstream /src/clickstream
COPY connectors /src/connectors
COPY dataflows /src/dataflows
COPY operators /src/operators
WORKDIR /src
RUN pip install --no-cache-dir "setuptools==80.9.0" "wheel==0.45.1" \
    && pip install --no-cache-dir -r requirements.lock \
    && pip install --no-cache-dir --no-deps --no-build-isolation . \
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
