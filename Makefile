# drug_nbdev — every target installs what it needs first; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
KERNEL  := drug-nbdev
HOST    ?= 127.0.0.1
PORT    ?= 8000
APP_PORT ?= 8866
LAB_PORT ?= 8888
DAYS    ?= 7


.PHONY: help install hooks lab pipeline reports test test-deps nbtest pytest serve app bench clean export image up down monitor

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,azure]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (drug_nbdev)" >/dev/null
	@$(MAKE) --no-print-directory hooks
	touch $@

install: $(STAMP) ## create .venv and install the package editable with its dev extras (no-op when up to date)

hooks: ## nbdev's hooks (clean on save in Jupyter, notebook merge driver) and a pre-commit check that notebooks are clean
	@$(BIN)/nbdev_install_hooks >/dev/null 2>&1 && echo "nbdev hooks installed" \
	  || echo "note: nbdev_install_hooks could not install its git hooks here (not a plain git checkout?)"
	@hooks=$$(git rev-parse --git-path hooks 2>/dev/null) && mkdir -p "$$hooks" && cp .ci/pre-commit "$$hooks/pre-commit" || true

lab: install ## JupyterLab on 127.0.0.1:$(LAB_PORT) with the project's kernel; nbdev cleans notebooks on save
	$(BIN)/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --ServerApp.port_retries=0 \
	  --ServerApp.root_dir=$(CURDIR) --MappingKernelManager.default_kernel_name=$(KERNEL) \
	  $(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)   # CI and containers run as root

pipeline: install ## run the whole pipeline on the defaults: ingest, explore, preprocess, train, explain -> reports/
	$(BIN)/drug-nbdev run

reports: install ## run the comparison grid kept in the repo (reports.yaml), rebuild reports/index.html, check every report
	$(BIN)/drug-nbdev run --params reports.yaml
	$(BIN)/drug-nbdev report

test-deps: install ## install what the tests need: Azurite (npm), PostgreSQL, Chromium, podman/buildah/runc/debootstrap (Debian)
	@missing=""; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  for exe in podman buildah runc debootstrap; do command -v $$exe >/dev/null || missing="$$missing $$exe"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi
	@test -x node_modules/.bin/azurite-blob || npm ci --no-audit --no-fund --loglevel=error

nbtest: install ## run the notebooks' inline tests (nbdev_test)
	$(BIN)/nbdev_test --n_workers 2

pytest: test-deps ## run the pytest suite in tests/ (starts Azurite, PostgreSQL, uvicorn, Voila, Chromium itself)
	$(BIN)/pytest

# The container build is mostly waiting on the network (debootstrap, pip inside the build), so it runs beside
# nbdev_test, from the same tree, and tests/test_image.py drives those images (DRUG_NBDEV_TEST_IMAGES). When the
# build failed, the test builds again itself and reports the failure with its log.
# one name per checkout: two checkouts on one machine do not replace each other's images
IMAGES_BUILT := localhost/drug-nbdev-make-test-$(shell printf %s "$(CURDIR)" | sha1sum | cut -c1-8)
test: test-deps ## install everything the tests need and run every test: nbdev_test, then pytest
	@mkdir -p $(VENV)/log; echo "building the container images beside nbdev_test (log: $(VENV)/log/image-build.log)"; \
	  ( IMAGE_PREFIX=$(IMAGES_BUILT) deploy/image.sh all >$(VENV)/log/image-build.log 2>&1 ) & build=$$!; \
	  $(BIN)/nbdev_test --n_workers 2; rc=$$?; \
	  wait $$build && built=$(IMAGES_BUILT) || { built=; echo "image build failed: tests/test_image.py builds again"; }; \
	  [ $$rc = 0 ] || exit $$rc; \
	  DRUG_NBDEV_TEST_IMAGES=$$built $(BIN)/pytest

export: install ## export the notebooks to drug_nbdev/ and clean them
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

serve: install ## serve the REST API on $(HOST):$(PORT) (docs at /docs)
	$(BIN)/drug-nbdev serve --host $(HOST) --port $(PORT)

app: install ## serve the Voila form for clinicians on 127.0.0.1:$(APP_PORT)
	$(BIN)/drug-nbdev form nbs/15_form.ipynb --port $(APP_PORT)   # settings in voila.json: loopback, no code or prose, preheated

bench: install ## print the benchmarks' numbers: batch scoring of 1 M rows, 8 x 1 M rows on a 2-worker Dask cluster, API latency and throughput, streaming ingest of 1 M and 10 M rows, the pipeline's stage times
	@command -v wrk >/dev/null || { echo "apt-get install: wrk (the API benchmark's load generator)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; } \
	  || echo "could not install wrk (not root?): bench_api.py prints its httpx figures only"; }
	$(BIN)/python bench/bench_predict.py
	$(BIN)/python bench/bench_dask.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_query.py
	$(BIN)/python bench/bench_pipeline.py

monitor: install ## drift report on the last $(DAYS) days of audited predictions -> reports/monitoring/<stamp>/ (exit 3 on drift)
	$(BIN)/drug-nbdev monitor --since $(DAYS)

image: ## build the container images drug-nbdev-api and drug-nbdev-form (docker when a daemon answers, else buildah)
	deploy/image.sh all

up: ## start the stack of compose.yaml (API, form, PostgreSQL, Azurite, MLflow); needs docker compose or podman-compose
	@if docker compose version >/dev/null 2>&1; then docker compose up -d --build; \
	  elif command -v podman-compose >/dev/null; then podman-compose up -d --build; \
	  else echo "make up: needs docker compose or podman-compose (apt-get install podman-compose)" >&2; exit 2; fi

down: ## stop and remove the stack of compose.yaml (volumes are kept)
	@if docker compose version >/dev/null 2>&1; then docker compose down; \
	  elif command -v podman-compose >/dev/null; then podman-compose down; \
	  else echo "make down: needs docker compose or podman-compose" >&2; exit 2; fi

clean: ## remove the venv, caches and everything the pipeline generated (keeps data/drug200.csv)
	rm -rf $(VENV) node_modules build dist *.egg-info .pytest_cache _proc
	rm -rf data/lake data/*.db mlruns models cache preds.*
	find reports -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
