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

.PHONY: demo test bench system-deps test-deps clean wheelhouse deb deb-check

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

# The Debian package: wheels fetched (hash-checked) before the build, which then runs offline.
DEB_DEBS := debhelper python3-venv lintian
DEB_CHECK_DEBS := mmdebstrap systemd-container dovecot-imapd dovecot-pop3d openssl
DEB_BUILD := build/deb/archivista-mail
PIP_CLEAN := env -u PIP_FIND_LINKS -u PIP_CERT -u PIP_CONSTRAINT -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null

wheelhouse:
	$(PIP_CLEAN) $(PYTHON) -m pip download -q --only-binary=:all: --require-hashes -r debian/requirements.lock -d debian/wheelhouse

deb: wheelhouse
	$(call apt_install,$(DEB_DEBS))
	rm -rf build/deb build/deb-old && mkdir -p $(DEB_BUILD)
	tar --exclude=./.venv --exclude=./build --exclude=./demo-data --exclude=./.git -cf - . | tar -xf - -C $(DEB_BUILD)
	cd $(DEB_BUILD) && dpkg-buildpackage -us -uc -b
	ls -l build/deb/*.deb

# Build the package twice (this version and a newer one, for the upgrade), run lintian, then
# install both in a clean Debian 12 booted with systemd and check it (debian/tests/install_check.py).
deb-check: deb
	$(call apt_install,$(DEB_CHECK_DEBS))
	lintian --fail-on error,warning build/deb/archivista-mail_*_amd64.deb
	mkdir -p build/deb-old && mv build/deb/*.deb build/deb-old/
	sed -i '1s/(\([^)]*\))/(\1+upgrade1)/' $(DEB_BUILD)/debian/changelog
	cd $(DEB_BUILD) && dpkg-buildpackage -us -uc -b >/dev/null
	$(PYTHON) debian/tests/install_check.py build/deb-old/*.deb build/deb/*.deb
