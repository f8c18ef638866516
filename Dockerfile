# syntax=docker/dockerfile:1
# drip: one image for the API (default command), the worker (`python worker.py`) and
# the migration job (`python -m storage.migrate`). See docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user; the code stays root-owned and read-only for it.
RUN groupadd --system --gid 10001 drip \
    && useradd --system --uid 10001 --gid drip --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin drip

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so source edits reuse this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (pyproject.toml lists its packages and modules).
COPY . .
# Bytecode now: the runtime user cannot write it, and the workflow sandbox re-imports the
# workflow modules for every run (compiling them each time without it).
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q /app \
    && mkdir -p /app/var \
    && chown drip:drip /app/var

USER drip

EXPOSE 8000

CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
