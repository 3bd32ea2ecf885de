# Quick start on Debian 12:  make demo   (set up, import the sample mails, list them)
#                            make test   (install what the tests need, run them)
PYTHON ?= python3
VENV ?= .venv
DATA ?= demo-data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin

# Debian packages: the runtime needs libmagic; the tests need Dovecot, openssl and Chromium
# (driven by Playwright with executable_path; never "playwright install", which downloads a browser).
RUNTIME_DEBS := python3-venv libmagic1
TEST_DEBS := dovecot-imapd dovecot-pop3d openssl chromium

.PHONY: demo test bench system-deps test-deps clean

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(RUNTIME_DEBS))

test-deps: system-deps
	$(call apt_install,$(TEST_DEBS))

$(BIN)/archivista-mail: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: system-deps $(BIN)/archivista-mail
	$(BIN)/archivista-mail --data-dir $(DATA) import --from samples
	$(BIN)/archivista-mail --data-dir $(DATA) docs list

test: test-deps $(BIN)/archivista-mail
	$(BIN)/python -m pytest -q

bench: test-deps $(BIN)/archivista-mail
	$(BIN)/python bench/import_bench.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
