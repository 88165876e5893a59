# portal-monitor: `make run` and `make test` are the whole quick start.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench check-config once clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## run: the daemon with ./alert_rules.yaml against the local Redis and PostgreSQL; /metrics on 127.0.0.1:9820
run: $(STAMP)
	$(VENV)/bin/portal-monitor run -c alert_rules.yaml

## test: the whole suite (disposable Redis and PostgreSQL are started by the tests themselves)
test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/portal-monitor test-rules tests/rules/default_rules_test.yaml

check-config: $(STAMP)
	$(VENV)/bin/portal-monitor check-config -c alert_rules.yaml

once: $(STAMP)
	$(VENV)/bin/portal-monitor once -c alert_rules.yaml

## bench: scheduler, log parsing and detection-latency benchmarks (minutes; not part of `make test`)
bench: $(STAMP)
	$(PY) bench/bench_scheduler.py
	$(PY) bench/bench_logfile.py
	$(PY) bench/bench_detection.py

## bench-compare: side by side with Prometheus + Alertmanager + exporters + mtail (~15 min, loopback only;
## installs the Debian packages when missing, as root); writes bench/compare/RESULTS.md. Options: ARGS="--runs 10"
.PHONY: bench-compare
bench-compare: $(STAMP)
	BENCH_COMPARE_MAKE=1 $(PY) bench/compare/run.py $(ARGS)

clean:
	rm -rf $(VENV) state .pytest_cache
