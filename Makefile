# Quick start on Debian 12:  make demo   (set up, import the sample mails, list them)
#                            make test   (install what the tests need, run them)
PYTHON ?= python3
VENV ?= .venv
DATA ?= demo-data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin

# Debian packages: the runtime needs libmagic; the tests need Dovecot, openssl and Chromium
# (driven by Playwright with executable_path; never "playwright install", which downloads a browser),
# and Postfix with Dovecot's LMTP for sending (installed unconfigured, no daemon started: see test-deps).
RUNTIME_DEBS := python3-venv libmagic1
TEST_DEBS := dovecot-imapd dovecot-pop3d dovecot-lmtpd openssl chromium

.PHONY: demo test lint bench system-deps test-deps clean wheelhouse deb deb-check foreign-servers messages messages-compile

define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call apt_install,$(RUNTIME_DEBS))

test-deps: system-deps
	$(call apt_install,$(TEST_DEBS))
	@# Postfix for the sending tests: "No configuration", and (where no policy-rc.d exists) a temporary one
	@# keeps the package from starting the system's mail service; the tests run their own on high ports.
	@if ! dpkg-query -W -f='$${Status}' postfix 2>/dev/null | grep -q 'ok installed'; then \
		echo "Installing Debian packages: postfix (unconfigured)"; \
		echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
		made=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
			$(SUDO) chmod 755 /usr/sbin/policy-rc.d; made=1; fi; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			postfix >/dev/null; rc=$$?; [ -z "$$made" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# pip's and setuptools' chatter goes to build/pip.log and is shown only when the install fails.
$(BIN)/archivista-mail: setup.cfg pyproject.toml
	@echo "Building $(VENV) (log: build/pip.log)"
	@mkdir -p build && $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >build/pip.log 2>&1 && $(BIN)/pip install -q -e '.[test]' >>build/pip.log 2>&1 \
		|| { cat build/pip.log; exit 1; }
	@touch $@

demo: system-deps $(BIN)/archivista-mail
	@$(BIN)/archivista-mail --data-dir $(DATA) init
	@$(BIN)/archivista-mail --data-dir $(DATA) import --from samples
	@$(BIN)/archivista-mail --data-dir $(DATA) docs list

test: test-deps foreign-servers $(BIN)/archivista-mail
	$(BIN)/python -m pytest -q -n auto

# Static checks CI runs before the tests: ruff (pyflakes, import order) and mypy (the package is annotated).
lint: $(BIN)/archivista-mail
	$(BIN)/ruff check archivista_mail webadmin tests scripts bench debian
	$(BIN)/mypy

bench: test-deps $(BIN)/archivista-mail
	$(BIN)/python bench/import_bench.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache

# WebAdmin's translations (gettext through Flask-Babel). Message ids are English, in the code and the
# templates; German is webadmin/translations/de/LC_MESSAGES/messages.po. 'make messages' extracts the
# ids (babel.cfg) and updates the catalogue: translate what comes new (empty) or changed (fuzzy), then
# 'make messages-compile' writes the .mo, committed beside the .po. tests/test_webadmin_i18n.py fails on
# an id without German and on a .mo older than its .po.
TRANSLATIONS := webadmin/translations

messages: $(BIN)/archivista-mail
	mkdir -p build
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext -k t --add-location=file --sort-output \
		--add-comments=Translators: --project=archivista-mail --copyright-holder="archivista-mail developers" \
		--version=$$($(BIN)/python -c "import archivista_mail; print(archivista_mail.__version__)") \
		-o build/messages.pot webadmin archivista_mail
	$(BIN)/pybabel update -i build/messages.pot -d $(TRANSLATIONS) --ignore-obsolete --previous

messages-compile: $(BIN)/archivista-mail
	$(BIN)/pybabel compile -d $(TRANSLATIONS) --statistics

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
deb-check: deb $(BIN)/archivista-mail
	$(call apt_install,$(DEB_CHECK_DEBS))
	lintian --fail-on error,warning build/deb/archivista-mail_*_amd64.deb
	mkdir -p build/deb-old && mv build/deb/*.deb build/deb-old/
	sed -i '1s/(\([^)]*\))/(\1+upgrade1)/' $(DEB_BUILD)/debian/changelog
	cd $(DEB_BUILD) && dpkg-buildpackage -us -uc -b >/dev/null
	$(BIN)/python debian/tests/install_check.py build/deb-old/*.deb build/deb/*.deb  # the emulators need the venv

# Courier (IMAP, POP3) and Cyrus (IMAP, POP3) for tests/test_foreign_servers.py. Their packages
# conflict with dovecot-imapd, so they are downloaded and unpacked into build/foreign-servers/root,
# never installed; the tests run them in a private mount namespace (tests/foreign_servers.py).
# FOREIGN_DEBS: the servers and the libraries from their "apt-cache depends" that Debian 12 with
# Dovecot lacks; FOREIGN_LIBS: further libraries they need, fetched only when this machine lacks
# them (the SASL plugins are loaded at run time). Unpacked again when these lists change.
FOREIGN := build/foreign-servers
FOREIGN_DEBS := courier-imap courier-pop courier-base courier-authdaemon courier-authlib courier-authlib-userdb \
	libcourier-unicode4 libidn12 libgamin0 gamin libpcre3 libltdl7 \
	cyrus-common cyrus-imapd cyrus-pop3d sasl2-bin libclamav12 libmspack0 libical3 libxapian30 libzephyr4
FOREIGN_LIBS := libgdbm6 libgnutls30 libglib2.0-0 libcrypt1 libpam0g libssl3 libsasl2-2 libsasl2-modules \
	libsasl2-modules-db libdb5.3 libicu72 libjansson4 libkrb5-3 libldap-2.5-0 libpq5 libsqlite3-0 libwrap0 \
	libxml2 libcom-err2 zlib1g

foreign-servers:
	$(call apt_install,openssl)
	@if [ "$$(cat $(FOREIGN)/root/.debs 2>/dev/null)" = "$(FOREIGN_DEBS) $(FOREIGN_LIBS)" ]; then \
		echo "$(FOREIGN)/root is up to date"; \
	else \
		set -e; rm -rf $(FOREIGN) && mkdir -p $(FOREIGN)/debs $(FOREIGN)/root; \
		$(SUDO) apt-get update -qq; \
		libs=$$(for p in $(FOREIGN_LIBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
		cd $(FOREIGN)/debs && apt-get download -qq -o APT::Sandbox::User=$$(id -un) $(FOREIGN_DEBS) $$libs && cd - >/dev/null; \
		for deb in $(FOREIGN)/debs/*.deb; do dpkg-deb -x $$deb $(FOREIGN)/root; done; \
		if [ -d $(FOREIGN)/root/lib ]; then cp -a $(FOREIGN)/root/lib/. $(FOREIGN)/root/usr/lib/ && rm -rf $(FOREIGN)/root/lib; fi; \
		missing=$$(find $(FOREIGN)/root/usr -type f \( -perm -u+x -o -name '*.so*' \) -print0 \
			| xargs -0 env LD_LIBRARY_PATH=$(FOREIGN)/root/usr/lib/x86_64-linux-gnu:$(FOREIGN)/root/usr/lib ldd 2>/dev/null \
			| grep 'not found' | sort -u); \
		if [ -n "$$missing" ]; then echo "Libraries missing for the unpacked servers:$$missing"; exit 1; fi; \
		echo "$(FOREIGN_DEBS) $(FOREIGN_LIBS)" > $(FOREIGN)/root/.debs; \
		echo "Unpacked into $(FOREIGN)/root:" $$(ls $(FOREIGN)/debs); \
	fi
