# Two commands from a fresh clone (README: "Try it", "Test it"):
#   make demo    a virtual environment in .venv, then `expclip predict --faces --annotate` on docs/examples/
#   make test    the same environment with the test tools, the system packages the tests need, then the README's
#                test command
# Each install step leaves a stamp in .venv named for what it installed, so a second run installs nothing.

PYTHON ?= python3
VENV ?= .venv
# The torch build and its torchvision (the VLM teachers' video processors need it), installed before the package so
# that pip pulls no other build to satisfy `torch>=2.4`.
# Another build: make test TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.14.1 torchvision==0.29.1
MODEL ?=
EXAMPLES ?= docs/examples
DEMO_OUTPUT ?= outputs/demo
PYTEST_ARGS ?= tests -q -n auto --dist loadscope
# Commands the tests need from the system, as command:Debian-package (the app's browser tests drive Chromium).
SYSTEM_TOOLS ?= chromium:chromium chromedriver:chromium-driver

BIN := $(VENV)/bin
# A change to setup.py or to the torch line changes the stamps' names, so the next run reinstalls.
INSTALL_KEY := $(shell { cat setup.py; echo '$(TORCH)'; } | cksum | cut -d' ' -f1)
APP_STAMP := $(VENV)/.installed-app-$(INSTALL_KEY)
TEST_STAMP := $(VENV)/.installed-test-$(INSTALL_KEY)
EXAMPLE_PHOTOS := $(sort $(wildcard $(EXAMPLES)/*.jpg))
DEMO_HINT := make demo: to use a local model folder instead: make demo MODEL=path (for example one written by \
	expclip convert, see the README)

.DEFAULT_GOAL := help
.PHONY: help demo test system-packages

help:
	@echo "make demo                 set up .venv, then label every face in the photos of $(EXAMPLES)/ and"
	@echo "                          write them with boxes and labels to $(DEMO_OUTPUT)/ (default model: fetched once, cached)"
	@echo "make demo MODEL=DIR       the same with a local model folder (for example one written by expclip convert)"
	@echo "make test                 set up .venv with the test tools and the system packages, then run the tests"
	@echo "make test PYTEST_ARGS=\"tests/test_modeling.py -q\"   only some tests (default: $(PYTEST_ARGS))"
	@echo "make help                 this list"
	@echo "Variables: VENV=$(VENV) PYTHON=$(PYTHON) TORCH=\"$(TORCH)\""

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(APP_STAMP): | $(BIN)/python
	rm -f $(VENV)/.installed-app-*
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[app]"
	touch $@

# The test extras include the app's, so a test install also serves the demo.
$(TEST_STAMP): | $(BIN)/python
	rm -f $(VENV)/.installed-app-* $(VENV)/.installed-test-*
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[test,app,onnx]"
	touch $@ $(APP_STAMP)

demo: $(APP_STAMP)
	@$(BIN)/expclip predict $(EXAMPLE_PHOTOS) --faces --annotate $(DEMO_OUTPUT) $(if $(MODEL),--model "$(MODEL)") \
		|| { status=$$?; $(if $(MODEL),,echo "$(DEMO_HINT)" >&2;) exit $$status; }
	@echo "make demo: the annotated photos are in $(DEMO_OUTPUT)/"

# Installs what is missing with apt-get when run as root; otherwise prints the one command to run (the tests that
# need a missing tool then say so themselves).
system-packages:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "apt-get install -y$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "make test: some tests need$$missing; install with:" >&2; \
		echo "    sudo apt-get install -y$$missing" >&2; \
	fi

test: $(TEST_STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The transformers.js tests' Node packages, when the project has them; npm ci's own record is the stamp.
ifneq ($(wildcard tests/js/package.json),)
SYSTEM_TOOLS += node:nodejs npm:npm
JS_STAMP := tests/js/node_modules/.package-lock.json

test: $(JS_STAMP)

$(JS_STAMP): tests/js/package.json $(wildcard tests/js/package-lock.json) | system-packages
	@if command -v npm >/dev/null 2>&1; then \
		echo "ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tests/js"; \
		ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix tests/js && touch $@; \
	else \
		echo "make test: npm is missing, so the transformers.js tests' packages are not installed" >&2; \
	fi
endif
