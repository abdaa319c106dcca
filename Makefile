# The two commands a new user needs: `make paper` runs the system, `make test` runs the tests.
# Both create or refresh the local virtualenv (.venv) first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv paper demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

paper: venv
	$(BIN)/python main.py --mode paper

# Offline: paper mode over the real 1-minute candles bundled in data/demo (USDT triangle,
# 2021-05-19 11:00-17:00 UTC), replayed as fast as possible on a fresh database.
demo: venv
	rm -f demo.db demo.db-wal demo.db-shm
	$(BIN)/python main.py --mode paper --replay data/demo --speed 0 --exit-at-end \
		--pairs BTC/USDT,ETH/USDT,ETH/BTC --quote-currency USDT --db sqlite:///demo.db \
		--metrics-addr 127.0.0.1:0

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy .

bench: venv
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
