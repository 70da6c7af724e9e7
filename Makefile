# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml models/digits/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: run test lint bench clean venv sysdeps

venv: $(STAMP)

# User code runs in a bubblewrap sandbox: install it when missing (as root), else say how.
sysdeps:
	@[ "$$DEEPFAAS_SANDBOX" = off ] || command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the sandbox of user functions)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "bubblewrap is missing: run 'sudo apt-get install -y bubblewrap' (or set DEEPFAAS_SANDBOX=off on a trusted single-user machine)"; exit 1; \
	  fi; }

$(STAMP): requirements.lock pyproject.toml models/digits/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e models/digits
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP) sysdeps
	$(BIN)/deepfaas up

test: $(STAMP) sysdeps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) sysdeps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .deepfaas .pytest_cache .mypy_cache .ruff_cache *.egg-info models/digits/src/*.egg-info
