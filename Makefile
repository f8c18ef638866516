# One command to run the whole system, one to run the tests. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run test bench lint clean migrate migration record-histories

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) devstack.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

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
