# portal-monitor: `make run` and `make test` are the whole quick start.
#
# Dependencies come from the hash-checked lock files, never from a fresh resolution:
#   requirements.lock      the daemon's runtime dependencies (`make run`, the Dockerfile)
#   requirements-dev.lock  the same pins plus the test and dev extras (`make test`, `make lint`, CI)
# `make lock` regenerates both from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP     := $(VENV)/.installed-dev

.PHONY: run test test-quick lint lock readme-figures bench conformance check-config once clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The lock first (every file checked against its hash, nothing resolved), then the package itself
# without dependencies, editable.
$(RUNTIME_STAMP): requirements.lock pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet --require-hashes -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.lock pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet --require-hashes -r requirements-dev.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

## run: the daemon with ./alert_rules.yaml against the local Redis and PostgreSQL; /metrics on 127.0.0.1:9820;
## the API token (incident pages' sign-in) in state/api-token, created on the first start unless $MONITOR_API_TOKEN is set
run: $(RUNTIME_STAMP)
	$(VENV)/bin/portal-monitor run -c alert_rules.yaml --api-token-file state/api-token

## test: the whole suite (disposable Redis and PostgreSQL are started by the tests themselves),
## then the shipped rule tests with both our test-rules and promtool
test: $(DEV_STAMP)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-rules

## test-rules: tests/rules/default_rules_test.yaml, unchanged, with `portal-monitor test-rules` on alert_rules.yaml
## and with `promtool test rules` on the output of `export-rules` (laid out so that the file's own
## `rule_files: [../../alert_rules.yaml]` finds the exported rules)
.PHONY: test-rules
test-rules: $(DEV_STAMP)
	$(VENV)/bin/portal-monitor test-rules tests/rules/default_rules_test.yaml
	@command -v promtool >/dev/null || { echo "promtool is not installed (Debian package: prometheus)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && mkdir -p $$tmp/tests/rules && \
	$(VENV)/bin/portal-monitor export-rules -c alert_rules.yaml > $$tmp/alert_rules.yaml && \
	cp tests/rules/default_rules_test.yaml $$tmp/tests/rules/ && \
	promtool test rules $$tmp/tests/rules/default_rules_test.yaml; status=$$?; rm -rf $$tmp; exit $$status

## test-quick: the unit layer only: no real server, daemon process, browser or fuzzer (tests/conftest.py marks those slow)
test-quick: $(DEV_STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/faults --ignore=tests/proof --ignore=tests/load --ignore=tests/fuzz

## lint: ruff (rules and formatting) and mypy --strict ([tool.mypy] in pyproject.toml) on monitor/ and checks/;
## runs all three and fails if any failed
lint: $(DEV_STAMP)
	@status=0; \
	echo "ruff check monitor checks"; $(VENV)/bin/ruff check monitor checks || status=1; \
	echo "ruff format --check monitor checks"; $(VENV)/bin/ruff format --check monitor checks || status=1; \
	echo "mypy (strict: monitor checks)"; $(VENV)/bin/mypy || status=1; \
	exit $$status

## lock: regenerate requirements.lock and requirements-dev.lock from pyproject.toml (and requirements-compat.in)
## with pip-tools, in its own venv, not the project's. Keeps the current pins where they still fit;
## LOCK_ARGS=--upgrade takes the newest.
LOCK_VENV := $(VENV)/lock-tools
LOCK_ARGS ?=
PIP_COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "pip-tools>=7.4,<8"; }
	$(PIP_COMPILE) -o requirements.lock pyproject.toml requirements-compat.in
	$(PIP_COMPILE) --extra test --extra dev -c requirements.lock -o requirements-dev.lock \
		pyproject.toml requirements-compat.in

## readme-figures: rewrite README.md's benchmark figures from bench/RESULTS.md and bench/compare/RESULTS.md
readme-figures:
	$(PYTHON) bench/readme_figures.py

## conformance: Prometheus's PromQL test files through our engine, per file passed/failed/skipped with reasons
## (folder: $$PROMQLTEST_DIR, else ../shared/reference/promqltest from the project root)
conformance: $(DEV_STAMP)
	$(PY) tests/promqltest/harness.py

check-config: $(RUNTIME_STAMP)
	$(VENV)/bin/portal-monitor check-config -c alert_rules.yaml

once: $(RUNTIME_STAMP)
	$(VENV)/bin/portal-monitor once -c alert_rules.yaml

## bench: scheduler, log parsing, detection-latency, state-file, PromQL engine and rules-vs-Prometheus benchmarks (minutes; not part of `make test`)
bench: $(DEV_STAMP)
	$(PY) bench/bench_scheduler.py
	$(PY) bench/bench_logfile.py
	$(PY) bench/bench_detection.py
	$(PY) bench/bench_statefile.py
	$(PY) bench/bench_promql.py
	$(PY) bench/bench_rules.py

## noise-report: the shipped rules over 30 seeded normal and 30 seeded fault days: pages per normal day and their
## causes, recall and pages per fault (tests/proof/{seed_day,fault_day}.py; a day's world is simulated once (two thirds
## of its time) and cached in bench/out/days-cache, then only the rules run again). Options: ARGS="--jobs 3"
.PHONY: noise-report
noise-report: $(DEV_STAMP)
	$(PY) -m tests.proof.noise_report --seeds 30 --fault-seeds 30 $(ARGS)

## bench-compare: side by side with Prometheus + Alertmanager + exporters + mtail (~15 min, loopback only;
## installs the Debian packages when missing, as root); writes bench/compare/RESULTS.md. Options: ARGS="--runs 10"
.PHONY: bench-compare
bench-compare: $(DEV_STAMP)
	BENCH_COMPARE_MAKE=1 $(PY) bench/compare/run.py $(ARGS)

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
