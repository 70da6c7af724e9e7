# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml models/digits/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
# Test files run on this many processes (each file keeps its own nats-server and platform).
TEST_WORKERS ?= 2

# Swagger UI for /docs and /api, from npm at build time: the pages never load a CDN.
SWAGGER_UI_VERSION := 5.32.0
SWAGGER_UI := gateway/static/swagger-ui
SWAGGER_UI_STAMP := $(SWAGGER_UI)/.swagger-ui-dist-$(SWAGGER_UI_VERSION)
SWAGGER_UI_FILES := swagger-ui-bundle.js swagger-ui.css favicon-32x32.png favicon-16x16.png LICENSE NOTICE
# The console's (/ui) htmx and uPlot, from npm at build time too: `package@version:file ...`.
CONSOLE_VENDOR := gateway/console/static/vendor
CONSOLE_PACKAGES := htmx.org@2.0.11:dist/htmx.min.js uplot@1.6.32:dist/uPlot.iife.min.js:dist/uPlot.min.css
CONSOLE_STAMP := $(CONSOLE_VENDOR)/.packages-$(shell echo '$(CONSOLE_PACKAGES)' | cksum | cut -d' ' -f1)

.PHONY: run test lint bench clean venv sysdeps assets

venv: $(STAMP)

# User code runs in a bubblewrap sandbox whose network slirp4netns connects outside (iproute2
# denies it the networks of DEEPFAAS_SANDBOX_DENY): install them when missing (as root), else
# say how.
sysdeps:
	@[ "$$DEEPFAAS_SANDBOX" = off ] || { command -v bwrap && command -v slirp4netns && { command -v ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; }; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap, slirp4netns and iproute2 (the sandbox of user functions, its network)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap slirp4netns iproute2 >/dev/null; \
	  else \
	    echo "bubblewrap, slirp4netns or iproute2 is missing: run 'sudo apt-get install -y bubblewrap slirp4netns iproute2' (or set DEEPFAAS_SANDBOX=off on a trusted single-user machine)"; exit 1; \
	  fi; }
	@# The browser test of /docs and /api drives a headless Chromium; without it that test skips.
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (the browser test of the API pages)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing: the browser test of /docs and /api will skip ('sudo apt-get install -y chromium')"; \
	  fi; }

assets: $(SWAGGER_UI_STAMP) $(CONSOLE_STAMP)

$(SWAGGER_UI_STAMP):
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: it fetches Swagger UI for /docs and /api ('sudo apt-get install -y npm')"; exit 1; }
	@rm -rf $(SWAGGER_UI) && mkdir -p $(SWAGGER_UI)
	@tmp=$$(mktemp -d) && \
	  (cd $$tmp && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null && tar -xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz) && \
	  for f in $(SWAGGER_UI_FILES); do cp $$tmp/package/$$f $(SWAGGER_UI)/ || exit 1; done; \
	  status=$$?; rm -rf $$tmp; exit $$status
	@touch $@

$(CONSOLE_STAMP):
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: it fetches htmx and uPlot for the console /ui ('sudo apt-get install -y npm')"; exit 1; }
	@rm -rf $(CONSOLE_VENDOR) && mkdir -p $(CONSOLE_VENDOR)
	@tmp=$$(mktemp -d) && status=0 && \
	  for spec in $(CONSOLE_PACKAGES); do \
	    pkg=$${spec%%:*}; files=$$(echo $${spec#*:} | tr ':' ' '); name=$${pkg%@*}; \
	    rm -rf $$tmp/package && (cd $$tmp && tar -xzf $$(npm pack --silent $$pkg)) || { status=1; break; }; \
	    for f in $$files; do cp $$tmp/package/$$f $(CONSOLE_VENDOR)/ || status=1; done; \
	    cp $$tmp/package/LICENSE $(CONSOLE_VENDOR)/LICENSE.$$name || status=1; \
	  done; rm -rf $$tmp; exit $$status
	@touch $@

$(STAMP): requirements.lock pyproject.toml models/digits/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e models/digits
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP) sysdeps assets
	$(BIN)/deepfaas up

test: $(STAMP) sysdeps assets
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) sysdeps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(SWAGGER_UI) $(CONSOLE_VENDOR) .deepfaas .pytest_cache .mypy_cache .ruff_cache *.egg-info models/digits/src/*.egg-info
