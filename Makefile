# The two commands: `make run` (the app, ready in a browser) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# The Google Cloud CLI bundles Python 3.12, the App Engine runtime's version: the suite runs there too.
SDK_ROOT := $(shell gcloud info --format='value(installation.sdk_root)' 2>/dev/null)
PY312 := $(SDK_ROOT)/platform/bundledpythonunix/bin/python3
VENV312 := .venv312
STAMP312 := $(VENV312)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# App Engine's python313 runtime: a CPython 3.13 on PATH or pyenv's (a pyenv shim without 3.13 selected fails the check).
PY313 := $(firstword $(foreach p,$(shell command -v python3.13) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3),\
  $(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && echo $(p))))
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: run test test311 test312 test313 bench bench-quick clean preflight deploy

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

$(STAMP312): requirements.txt requirements-dev.txt
	test -x $(VENV312)/bin/python || $(PY312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV312)/.installed-* && touch $@

$(STAMP313): requirements.txt requirements-dev.txt
	test -x $(VENV313)/bin/python || $(PY313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV313)/.installed-* && touch $@

run: $(STAMP)
	exec $(VENV)/bin/python -m devserver.run

test: test311 test312 test313

test311: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test312:
	@if [ -x "$(PY312)" ]; then \
	  $(MAKE) --no-print-directory $(STAMP312) && \
	  $(VENV312)/bin/python -m pytest -m "not browser and not slow" $(PYTEST_ARGS); \
	else echo "test312: the Google Cloud CLI's bundled Python 3.12 is not installed; skipped"; fi

# 3.13 is the deploy runtime: the fast suite runs there; browser and slow tests run once, under 3.11.
test313:
	@if [ -n "$(PY313)" ]; then \
	  $(MAKE) --no-print-directory $(STAMP313) && \
	  $(VENV313)/bin/python -m pytest -m "not browser and not slow" $(PYTEST_ARGS); \
	else echo "test313: no CPython 3.13 found (python3.13 on PATH or ~/.pyenv/versions/3.13*); skipped"; fi

# `make bench`, `make bench QUICK=1` or `make bench-quick` (~20 s, noisy: indicative only), BENCH_ARGS=--json ...
QUICK ?=
BENCH_ARGS ?=

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

bench-quick:
	$(MAKE) --no-print-directory bench QUICK=1

clean:
	rm -rf $(VENV) $(VENV312) $(VENV313) local artifacts .pytest_cache

# Deploy: the preflight (configs parse with gcloud's own parsers, KMS_KEY_NAME set or
# ALLOW_LOCAL_KEK=1, requirements pinned, no secrets in the upload set, a project), then deploy.
DEPLOY_CONFIGS := app.yaml cron.yaml $(wildcard index.yaml)
PREFLIGHT_ARGS ?=

preflight: $(STAMP)
	$(VENV)/bin/python -m tools.preflight $(PREFLIGHT_ARGS)

deploy: preflight
	gcloud app deploy $(DEPLOY_CONFIGS) $(DEPLOY_ARGS)

# `make test-loaded PYTEST_ARGS=tests/test_remote_codes.py [LOADED_VENV=.venv312]`: that part of the
# suite with every core busy (one CPU burner per core for its duration, stopped by their own pids).
# A verdict that depends on timing shows here, not on a quiet machine (issue 23).
.PHONY: test-loaded
LOADED_VENV ?= $(VENV)
BURNERS ?= $(shell nproc 2>/dev/null || echo 2)

test-loaded: $(STAMP)
	@pids=""; trap 'kill $$pids 2>/dev/null; exit 130' INT TERM; \
	for i in $$(seq $(BURNERS)); do $(PYTHON) -c 'while 1: pass' & pids="$$pids $$!"; done; \
	echo "test-loaded: $(BURNERS) CPU burners (pids$$pids)"; \
	status=0; $(LOADED_VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	kill $$pids 2>/dev/null; exit $$status
