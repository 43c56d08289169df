# eventsvc: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi

.PHONY: run test setup translations db demo bench bench-summary clean

$(BIN)/activate: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $(BIN)/activate

setup: $(BIN)/activate translations

## axe-core for the accessibility checks in the browser tests (pinned in package-lock.json)
node_modules/axe-core/axe.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

translations: $(BIN)/activate
	@if ls translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then $(BIN)/pybabel compile -d translations >/dev/null; fi

db: setup
	$(FLASK) db upgrade

demo: db
	$(FLASK) demo

## Serve the demo on http://127.0.0.1:5000 with a worker and a local mailbox.
run: demo
	$(BIN)/python -m eventsvc.devserver

## The whole suite, on SQLite and PostgreSQL.
test: setup node_modules/axe-core/axe.min.js
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.run

bench-summary: setup
	$(BIN)/python -m bench.summary

clean:
	rm -rf $(VENV) instance .pytest_cache
