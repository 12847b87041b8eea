# One command installs, one tests, one runs the demo. Everything lives under .venv and .stack.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,pipelines,serve,stack,dev

.PHONY: install test test-all stack-up stack-down demo console bench clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e '.[$(EXTRAS)]'

test:
	$(BIN)/pytest

test-all:
	$(BIN)/pytest -m 'not gpu'

stack-up:
	bash deploy/stack.sh up

stack-down:
	bash deploy/stack.sh down

demo:
	$(BIN)/inctrl demo

# The operator console on the data `make demo` left (its stack restarted, its results indexed): http://127.0.0.1:8080
CONSOLE_DATA ?= .demo
console:
	bash deploy/console.sh $(CONSOLE_DATA)

bench:
	$(BIN)/inctrl bench model

clean:
	bash deploy/stack.sh down || true
	rm -rf .stack .pytest_cache
