# The two commands: `make run` (the app, ready in a browser) and `make test` (the whole suite; `make test-fast`: a minute).
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
# pytest-xdist for the whole-suite run: two workers; each module on one worker, the browser tests together (tests/conftest.py).
XDIST ?= -n 2 --dist loadgroup

.PHONY: run test test311 test312 test313 test-fast test-loaded bench bench-quick bench-signer-backends clean preflight deploy

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

# The whole suite runs once, on 3.13 (the deploy runtime); 3.11 and 3.12 run what differs by interpreter
# (`-m interp`: loading tiers, compat, adapters, a slice of interop, a smoke test). Without a 3.13 the
# whole suite runs on 3.11. Exit status 5 (PYTEST_ARGS selected nothing in a slice) is not a failure.
test: test313 test311 test312

# $(STAMP) first: tests start `make run`, which uses .venv; two xdist workers must not both create it.
test313: $(STAMP)
	@if [ -n "$(PY313)" ]; then \
	  $(MAKE) --no-print-directory $(STAMP313) && \
	  $(VENV313)/bin/python -m pytest $(XDIST) $(PYTEST_ARGS); \
	else echo "test313: no CPython 3.13 found (python3.13 on PATH or ~/.pyenv/versions/3.13*): the whole suite on $(VENV)"; \
	  $(MAKE) --no-print-directory $(STAMP) && $(VENV)/bin/python -m pytest $(XDIST) $(PYTEST_ARGS); fi

test311: $(STAMP)
	$(VENV)/bin/python -m pytest -m interp $(PYTEST_ARGS) || [ $$? -eq 5 ]

test312:
	@if [ -x "$(PY312)" ]; then \
	  $(MAKE) --no-print-directory $(STAMP312) && \
	  { $(VENV312)/bin/python -m pytest -m interp $(PYTEST_ARGS) || [ $$? -eq 5 ]; }; \
	else echo "test312: the Google Cloud CLI's bundled Python 3.12 is not installed; skipped"; fi

# Under a minute: no emulator, browser, partner servers or slow tests; Hypothesis's `dev` profile.
FAST_MARKS := not emulator and not browser and not interop and not slow
test-fast:
	@if [ -n "$(PY313)" ]; then $(MAKE) --no-print-directory $(STAMP313); else $(MAKE) --no-print-directory $(STAMP); fi
	HYPOTHESIS_PROFILE=dev $(if $(PY313),$(VENV313),$(VENV))/bin/python -m pytest -m "$(FAST_MARKS)" $(PYTEST_ARGS)

# `make bench`, `make bench QUICK=1` or `make bench-quick` (~20 s, noisy: indicative only), BENCH_ARGS=--json ...
QUICK ?=
BENCH_ARGS ?=

# The `peers` group's niquests lives in .venv-peers: urllib3-future's wheel replaces urllib3 where installed.
VENV_PEERS := .venv-peers
STAMP_PEERS := $(VENV_PEERS)/.installed-$(shell cat bench/requirements-peers.txt | sha1sum | cut -c1-12)

$(STAMP_PEERS): bench/requirements-peers.txt
	test -x $(VENV_PEERS)/bin/python || $(VENV)/bin/python -m venv $(VENV_PEERS)
	$(VENV_PEERS)/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements-peers.txt
	rm -f $(VENV_PEERS)/.installed-* && touch $@

bench: $(STAMP) $(STAMP_PEERS)
	$(VENV)/bin/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

bench-quick:
	$(MAKE) --no-print-directory bench QUICK=1

# Signer backends side by side (LocalSigner, Cloud KMS stand-in, SoftHSM2): signatures/s and handshakes/s.
bench-signer-backends: $(STAMP)
	$(VENV)/bin/python -m bench.signer_backends $(BENCH_ARGS)

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
