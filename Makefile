# `make run` runs the whole system, `make test` the whole test suite; both
# install what they need first, on a fresh Debian machine with Python 3.11.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/*.proto)
GENERATED := $(patsubst protos/%.proto,ridesync/pb/%_pb2.py,$(PROTOS))

.PHONY: run test install rabbitmq databases chromium bench clean

# AUTH_MODE defaults to open here only, so that the original web client works
# on a laptop; AUTH_MODE=token AUTH_SECRET=... make run checks tokens.
run: install rabbitmq
	AUTH_MODE=$${AUTH_MODE:-open} PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho start --port $${PORT:-8081}

test: install rabbitmq databases chromium
	$(BIN)/pytest $(PYTEST_ARGS)

install: $(VENV)/.installed $(GENERATED)

$(VENV)/.installed: requirements.txt
	scripts/make-venv $(PYTHON) $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

ridesync/pb/%_pb2.py: protos/%.proto $(VENV)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iridesync/pb=protos --python_out=. --grpc_python_out=. $<

rabbitmq: $(VENV)/.installed
	$(BIN)/python -m scripts.ensure_rabbitmq

# The tests' PostgreSQL and Redis (make run needs neither: a SQLite file, the pool in process).
databases: $(VENV)/.installed
	$(BIN)/python -m scripts.ensure_postgres
	$(BIN)/python -m scripts.ensure_redis

# The browser the console's tests drive (Debian's chromium; Playwright downloads none).
chromium: $(VENV)/.installed
	$(BIN)/python -m scripts.ensure_chromium

bench: install rabbitmq databases
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) ridesync/pb/*_pb2.py ridesync/pb/*_pb2_grpc.py
