# HabitBot — the developer's and operator's front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Pinned with hashes by `make lock` (pip-tools' pip-compile) from setup.cfg: production, and
# production plus the test extras; the build tools (setuptools, wheel) alone, installed first.
LOCK       := requirements.lock
TEST_LOCK  := requirements-test.lock
BUILD_LOCK := requirements-build.lock
LOCK_VENV ?= var/lock-tools
PIP_TOOLS := pip-tools==7.6.2
T       ?= tests
PYTEST_ARGS ?=
TEST_SERVICES := test 55432 56380

.PHONY: help install install-test system-deps test-system-deps lock run test lint typecheck \
        deploy-gate check-schema bench services-up services-down ctl clean i18n-extract i18n-update

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

# Installs the Debian packages listed in $$need (as root; says what is missing otherwise).
APT_INSTALL = if [ -n "$$need" ]; then echo "installing:$$need"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or install$$need yourself)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi

system-deps: ## install PostgreSQL, Redis and venv support from apt (what `make run` needs)
	@need=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need="$$need postgresql"; \
	command -v redis-server >/dev/null || need="$$need redis-server"; \
	python3 -c 'import ensurepip, venv' 2>/dev/null || need="$$need python3-venv"; \
	command -v psql >/dev/null || need="$$need postgresql-client"; \
	$(APT_INSTALL)

# nginx is only checked (`nginx -t`), never run: the daemon Debian starts on installing it is
# stopped and disabled again.
test-system-deps: system-deps ## also Chromium (browser tests), nginx, openssl, logrotate (conf/)
	@need=""; \
	test -x /usr/bin/chromium || need="$$need chromium"; \
	test -x /usr/bin/chromedriver || need="$$need chromium-driver"; \
	test -x /usr/sbin/nginx || need="$$need nginx"; \
	command -v openssl >/dev/null || need="$$need openssl"; \
	test -x /usr/sbin/logrotate || need="$$need logrotate"; \
	$(APT_INSTALL); \
	case "$$need" in *nginx*) { systemctl disable --now nginx || service nginx stop || \
	  /usr/sbin/nginx -s stop; } >/dev/null 2>&1 || true;; esac

# Production dependencies only, each checked against its hash in the lock; then the project
# itself without dependencies. Whatever is built from source (crontab, the project) is built
# with the locked setuptools and wheel, installed first: nothing is fetched unchecked.
$(STAMP): setup.cfg pyproject.toml $(LOCK) $(BUILD_LOCK)
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || python3 -m venv $(VENV)
	@mkdir -p var
	@$(PIP) install -q --require-hashes -r $(BUILD_LOCK) >var/pip.log 2>&1 \
	  || { cat var/pip.log; exit 1; }
	@$(PIP) install -q --require-hashes --no-build-isolation -r $(LOCK) >var/pip.log 2>&1 \
	  || { cat var/pip.log; exit 1; }
	@$(PIP) install -q --no-deps --no-build-isolation -e . >var/pip.log 2>&1 \
	  || { cat var/pip.log; exit 1; }
	@$(PIP) check >var/pip.log 2>&1 \
	  || { cat var/pip.log; echo "setup.cfg needs what $(LOCK) lacks: run make lock"; exit 1; }
	@$(PY) -c 'import habitbot, telebot, rq_scheduler, flask, sqlalchemy, alembic' \
	  || { echo "Python dependencies failed to install"; exit 1; }
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP) $(TEST_LOCK)
	@$(MAKE) --no-print-directory test-system-deps
	@$(PIP) install -q --require-hashes --no-build-isolation -r $(TEST_LOCK) >var/pip.log 2>&1 \
	  || { cat var/pip.log; exit 1; }
	@$(PY) -c 'import pytest, selenium, prometheus_client' \
	  || { echo "test dependencies failed to install"; exit 1; }
	@touch $(TEST_STAMP)

install: $(STAMP) ## create the venv and install the production dependencies from the lock
install-test: $(TEST_STAMP) ## install as above plus the test dependencies (make test does this)

# pip-compile in its own venv, against the package index alone (LOCK_PIP_CONFIG: a machine's
# pip configuration, extra indexes or constraints, must not leak into the locks).
# Existing pins are kept unless setup.cfg needs others; U=1 upgrades every pin.
LOCK_PIP_CONFIG ?= /dev/null
PIP_COMPILE = PIP_CONFIG_FILE=$(LOCK_PIP_CONFIG) $(LOCK_VENV)/bin/pip-compile -q \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	--build-deps-for editable $(if $(U),--upgrade)
lock: ## regenerate the requirements*.lock files from setup.cfg and pyproject.toml (U=1 upgrades)
	@test -x $(LOCK_VENV)/bin/pip-compile || { python3 -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install -q '$(PIP_TOOLS)'; }
	$(PIP_COMPILE) -o $(LOCK) setup.cfg
	$(PIP_COMPILE) --extra test -c $(LOCK) -o $(TEST_LOCK) setup.cfg
	$(PIP_COMPILE) --only-build-deps -c $(LOCK) -o $(BUILD_LOCK) pyproject.toml

run: install ## run the whole stack in the foreground (a sandbox when nothing is configured)
	@$(PY) -m habitbot.sandbox.stack

services-up: install ## start the private PostgreSQL and Redis used by the tests
	@$(PY) -m habitbot.sandbox.services start $(TEST_SERVICES)

services-down: ## stop the private test PostgreSQL and Redis
	@test -x $(PY) && $(PY) -m habitbot.sandbox.services stop $(TEST_SERVICES) || true

test: install-test ## run the test suite (T=path for a subset) against real PostgreSQL and Redis
	@set -o pipefail; \
	if [ -z "$$TEST_PG_ADMIN_URL" ]; then \
	  eval "$$($(PY) -m habitbot.sandbox.services start $(TEST_SERVICES) | sed 's/^/export /')" || exit 1; \
	  started=1; \
	fi; \
	$(PY) -m pytest $(T) $(PYTEST_ARGS); rc=$$?; \
	if [ -n "$$started" ]; then $(PY) -m habitbot.sandbox.services stop $(TEST_SERVICES); fi; \
	exit $$rc

lint: install-test ## ruff
	@$(VENV)/bin/ruff check habitbot workers webhooks migrations tests drills bench

typecheck: install-test ## mypy on the packages
	@$(VENV)/bin/mypy

deploy-gate: install ## migrate to head and verify the schema (needs DATABASE_URL)
	@$(VENV)/bin/habitbot deploy-gate

check-schema: install ## verify the schema without changing it
	@$(VENV)/bin/habitbot check-schema

bench: install ## run the benchmarks (ratios to limits, one JSON line per figure)
	@for b in bench/sender_bench.py bench/due_selection_bench.py bench/reminders_bench.py \
	         bench/webhook_bench.py bench/flood_bench.py; do \
	  $(PY) $$b || exit 1; done

.PHONY: drill drills
drills: install ## rehearse every runbook entry on a real stack (~30 min): JSON lines and a table
	@$(PY) -m drills

drill: install ## rehearse one runbook entry on a real stack: make drill NAME=1.7
	@test -n "$(NAME)" || { echo "usage: make drill NAME=1.7 (the sections of docs/RUNBOOK.md)"; \
	  exit 2; }
	@$(PY) -m drills $(NAME)

ctl: ## supervisorctl for the running stack: make ctl ARGS="status"
	@$(VENV)/bin/supervisorctl -c supervisord.conf $(ARGS)

i18n-extract: install ## extract translatable strings into habitbot/locale/messages.pot
	@$(VENV)/bin/pybabel -q extract -k N_ -k gettext -k ngettext:1,2 --no-location \
	  -o habitbot/locale/messages.pot habitbot workers

i18n-update: i18n-extract ## merge new strings into the ru and en catalogs
	@$(VENV)/bin/pybabel -q update -i habitbot/locale/messages.pot -d habitbot/locale \
	  --ignore-obsolete --no-fuzzy-matching

clean: services-down ## remove the venv and local data (var/)
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache *.egg-info
