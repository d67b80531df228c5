# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# MONAI Label and MONAI Deploy live in a second environment layered over .venv: installed beside the
# runtime they make every `import monai` import holoscan (seconds, and a stack-size warning).
CLIENTS_VENV ?= .venv-clients
CPY := $(CLIENTS_VENV)/bin/python
CLIENTS_INSTALLED := $(CLIENTS_VENV)/.installed
CLIENT_TESTS := tests/test_monailabel.py tests/test_deploy.py
SITE_PACKAGES := import sysconfig; print(sysconfig.get_paths()['purelib'])
# torch is pinned before anything else so that pip never pulls a CUDA build as a dependency: to the version
# configs/metadata.json records (model-zoo's pytorch_version), so that the two never disagree.
TORCH_SPEC ?= torch==$(shell $(PYTHON) -c "import json; print(json.load(open('configs/metadata.json'))['pytorch_version'])")
# MONAI Label and MONAI Deploy, without their GPU dependencies (see the clients extra in pyproject.toml);
# MONAI itself again, so that monai.deploy lands inside the clients environment's own monai package.
MONAI_SPEC := $(shell grep -o 'monai==[0-9.]*' pyproject.toml)
CLIENT_SPECS ?= $(MONAI_SPEC) monailabel==0.8.5 monai-deploy-app-sdk==4.0.0 holoscan-cu13==4.6.0
DEMO_DATA ?= data/phantoms
PYTHON_FILES := bundle tests scripts conftest.py
# the demo's phantoms are made at 3 mm, and trained and evaluated on that grid; it validates once, at the end
DEMO_ARGS := --dataset_dir $(DEMO_DATA) --pixdim "[3.0,3.0,3.0]"
# holoscan (MONAI Deploy, in .venv-clients) asks for a 32 MB stack and warns at every `import monai` below it
STACK := ulimit -s 32768 2>/dev/null;
DEMO_CONFIGS := "['configs/train.json','configs/demo.json']"
EVAL_CONFIGS := "['configs/train.json','configs/evaluate.json','configs/demo.json']"

.PHONY: install install-clients demo lint test test-fast timings package clean

install: $(INSTALLED)

install-clients: $(CLIENTS_INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,fl,clinical]"
	$(PY) -m pip uninstall --quiet --yes monailabel monai-deploy-app-sdk holoscan-cu13 2>/dev/null || true
	touch $(INSTALLED)

# .venv-clients sees every package of .venv (a .pth file) and adds only the clients on top.
$(CLIENTS_INSTALLED): $(INSTALLED)
	test -x $(CPY) || $(PYTHON) -m venv $(CLIENTS_VENV)
	base=$$($(PY) -c "$(SITE_PACKAGES)"); own=$$($(CPY) -c "$(SITE_PACKAGES)"); \
		echo "import site; site.addsitedir('$$base')" > $$own/_lckd_base.pth
	$(CPY) -m pip install --quiet -e ".[clients]"
	$(CPY) -m pip install --quiet --no-deps --ignore-installed $(CLIENT_SPECS)
	touch $(CLIENTS_INSTALLED)

demo: $(INSTALLED)
	@start=$$(date +%s); \
	rm -rf $(DEMO_DATA) && $(VENV)/bin/lckd-make-phantoms --out $(DEMO_DATA) --cases 40 --spacing 3 --seed 0 && \
	$(PY) -m monai.bundle run --config_file $(DEMO_CONFIGS) $(DEMO_ARGS) --val_interval 25 && \
	$(PY) -m monai.bundle run --config_file $(EVAL_CONFIGS) $(DEMO_ARGS) && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; heatmap: eval/report/combinations.png, table: eval/report/summary.md;" \
		"runs: mlflow ui --backend-store-uri sqlite:///eval/mlruns.db"

# two pytest workers of one torch thread each (tests/conftest.py): the suite's many `monai.bundle run` subprocesses
# spend seconds importing on one core, which the other worker's tests then use
# what pre-commit checks at each commit, on every Python file of the project
lint: $(INSTALLED)
	$(VENV)/bin/ruff check $(PYTHON_FILES)
	$(VENV)/bin/ruff format --check $(PYTHON_FILES)

test: lint $(CLIENTS_INSTALLED)
	$(PY) -m pytest -q -n 2 $(addprefix --ignore=,$(CLIENT_TESTS))
	$(STACK) $(CPY) -m pytest -q $(CLIENT_TESTS)

# what a developer runs between edits: the lint and every test not marked slow (no workflow, subprocess or training)
test-fast: lint
	$(PY) -m pytest -q -n 2 -m "not slow" $(addprefix --ignore=,$(CLIENT_TESTS))

# docs/timings.md: make demo, make test-fast and make test timed on this machine (README and the model card point at it)
timings: $(INSTALLED) $(CLIENTS_INSTALLED)
	$(PY) -m bundle.reports.timings

# make package VERSION=0.2.0 CHANGE="what changed" KEY=keys/site-a.key [SCHEMA=meta_schema_20240725.json]:
# dist/lckd_brats_<VERSION>.zip, signed with KEY (make one: lckd-package keygen --out keys/site-a)
package: $(INSTALLED)
	$(VENV)/bin/lckd-package pack --version "$(VERSION)" --change "$(CHANGE)" --key "$(KEY)" --out dist $(if $(SCHEMA),--schema "$(SCHEMA)")

clean:
	rm -rf eval mlruns models/*.pt models/*.ts models/set_aside_* $(DEMO_DATA)
