# The few commands everyone runs. `make demo` and `make test` set up .venv themselves; the install
# step is skipped while pyproject.toml is unchanged (a stamp file named after its hash).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
IMAGES ?= 500
# CI-bounded test run: per-test timeout from pyproject, chaos and slow tests in their bounded form.
PYTEST_ARGS ?= -q

.PHONY: install demo test test-fast test-replay test-rules record-histories lint bench chaos fuzz up down \
	schema-manifest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,embedded]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/antenna-jobs demo --images $(IMAGES)

# Every test once: the workflow tests (REPLAY_TESTS below) run in the stricter form only, with
# the workflow cache off; every other test starts its workers with the cache on, as deployed.
# The two sessions run side by side (each has its own schemas, Temporal dev server, job ids and
# queues; most of a test's time is waiting on a server): about 7 min instead of 10. The replay
# pass's output follows the main one's; either failing fails the target.
test: install
	@mkdir -p .state; \
	$(REPLAY_PYTEST) --basetemp=.state/pytest-replay > .state/test-replay.log 2>&1 & replay=$$!; \
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS) --basetemp=.state/pytest-main \
		$(addprefix --ignore=,$(REPLAY_TESTS)); main=$$?; \
	wait $$replay; rc=$$?; \
	echo "== the workflow tests with the workflow cache off (make test-replay)"; \
	cat .state/test-replay.log; \
	[ $$main -eq 0 ] && [ $$rc -eq 0 ]

# The tests that need no service (marked from the fixtures they use, tests/helpers/fast.py) and the
# workflows with mocked activities on the Temporal dev server the session starts itself: under a
# minute, with no PostgreSQL, Redis, NATS or RabbitMQ. Their URLs point at a closed port here, so
# a test that reaches one anyway fails instead of passing on what happens to run on this machine.
# (Not Temporal's address: tests of the connection settings check its default.)
CLOSED := 127.0.0.1:1
FAST_ENV := ANTENNA_JOBS_DATABASE_URL=postgresql://postgres@$(CLOSED)/none \
	ANTENNA_JOBS_REDIS_URL=redis://$(CLOSED)/0 ANTENNA_JOBS_NATS_URL=nats://$(CLOSED)
# Temporary files in a directory of its own: pytest's shared one (/tmp/pytest-of-<user>) is pruned
# at the end of every run, and a run beside this one (another checkout's) can fail that pruning.
test-fast: install
	mkdir -p .state
	$(FAST_ENV) $(BIN)/pytest $(PYTEST_ARGS) -m fast --basetemp=.state/pytest-fast

# The alert rules alone (make test runs the same through tests/integration/test_monitoring_files.py,
# with the compose files and a live Prometheus in test_prometheus_live.py). Needs Debian's
# prometheus package (.ci/run installs it).
test-rules:
	promtool check rules deploy/prometheus/rules.yml
	cd deploy/prometheus && promtool test rules rules.test.yml

# The workflow tests with the workers' workflow cache off: every workflow task replays its run
# from the start, as after a worker restart (a run that does not replay its own history fails).
REPLAY_TESTS := tests/workflows tests/integration/test_e2e_async_job.py \
	tests/integration/test_bridge_jobs.py tests/chaos/test_cancel_paths.py
TEST_ENV := ANTENNA_JOBS_TEST_PROFILE=$${ANTENNA_JOBS_TEST_PROFILE:-ci}
REPLAY_PYTEST = ANTENNA_JOBS_WORKER_MAX_CACHED_WORKFLOWS=0 $(TEST_ENV) \
	$(BIN)/pytest $(PYTEST_ARGS) $(REPLAY_TESTS)
test-replay: install
	$(REPLAY_PYTEST)

# This release's workflow histories, recorded from real runs of every path of every workflow (the
# tests below), into tests/histories/<version>/; commit them (test_recorded_histories.py replays
# every committed set in each test run). Prune a set once no run its release started can be open.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
HISTORY_TESTS := tests/workflows tests/chaos/test_chaos_worker_kill.py tests/chaos/test_cancel_paths.py \
	tests/integration/test_e2e_async_job.py tests/integration/test_bridge_jobs.py \
	tests/integration/test_antenna_task_jobs.py
record-histories: install
	rm -rf tests/histories/$(VERSION)
	ANTENNA_JOBS_TEST_PROFILE=ci $(BIN)/pytest -q $(HISTORY_TESTS) \
		--deselect tests/workflows/test_recorded_histories.py \
		--record-histories tests/histories/$(VERSION)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every benchmark with its goal, the figure measured and the ratio (harness.py, big_body.py and
# scratch.py are their shared parts); then the 100,000-image demo end to end.
BENCHMARKS := idle_jobs big_results publish_bench many_jobs scale_out head_of_line fair_share json_codecs
bench: install
	@set -e; for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; \
		$(BIN)/python benchmarks/$$b.py; done; \
		echo "== antenna-jobs demo --images 100000 --fresh (goal < 60 s)"; \
		$(BIN)/antenna-jobs demo --images 100000 --fresh

# The full form of the chaos tests (CI runs them bounded as part of `make test`).
# Ends with the table of recovery times (median per fault or cancel path) the tests measured.
chaos: install
	rm -f .state/chaos-recovery.jsonl
	ANTENNA_JOBS_TEST_PROFILE=full $(BIN)/pytest -q -m "chaos or slow"; rc=$$?; \
		$(BIN)/python -m tests.chaos.report --profile full; exit $$rc

# More generated inputs than CI's bounded run (hypothesis properties, schemathesis over OpenAPI).
fuzz: install
	ANTENNA_JOBS_TEST_PROFILE=full $(BIN)/pytest -q -m fuzz

up: install
	$(BIN)/antenna-jobs up

down: install
	$(BIN)/antenna-jobs down

# The manifest of Antenna's tables as antenna-jobs uses them, from Antenna's schema dump (copy a
# new ../shared/antenna/schema.sql to tests/fixtures/antenna/ first); needs a PostgreSQL.
ANTENNA_SCHEMA_SQL ?= tests/fixtures/antenna/schema.sql
schema-manifest: install
	$(BIN)/antenna-jobs db manifest --schema-sql $(ANTENNA_SCHEMA_SQL) --out antenna_db/schema_manifest.json
