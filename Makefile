# Two commands for a fresh machine:  `make demo` (set up + default benchmark)
# and `make test` (set up + the test suite). Versions: constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/digits_mlp

.PHONY: setup demo test docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py constraints.txt $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt --upgrade pip setuptools
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/mu-jax benchmark --config=mu_jax.configs.digits_mlp --workdir=$(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The results pages, the leaderboard and the README's headline, from docs/runs/.
docs: setup
	$(BIN)/mu-jax report --readme=README.md

clean:
	rm -rf $(VENV) runs
