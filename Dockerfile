# One image for every job of clickstream-dataflows.
# Bytewax 0.21.1 has wheels for CPython <= 3.12: keep the base on 3.12.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dataflows ./dataflows
COPY operators ./operators
COPY clickstream ./clickstream
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 dataflow

USER 10001
# JOB picks the dataflow module (dataflows.<JOB>); extra arguments go to bytewax.run.
ENV JOB=clicks
ENTRYPOINT ["sh", "-c", "exec python -m bytewax.run \"dataflows.${JOB}\" \"$@\"", "--"]
