# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# torch is pinned before anything else so that pip never pulls a CUDA build as a dependency.
TORCH_SPEC ?= torch==2.13.0
# MONAI Label and MONAI Deploy, without their GPU dependencies (see the clients extra in pyproject.toml)
CLIENT_SPECS ?= monailabel==0.8.5 monai-deploy-app-sdk==4.0.0 holoscan-cu13==4.6.0
DEMO_DATA ?= data/synthetic
# holoscan (MONAI Deploy, installed for its test) asks for a 32 MB stack and warns at every `import monai` below it
STACK := ulimit -s 32768 2>/dev/null;
DEMO_CONFIGS := "['configs/train.json','configs/demo.json']"
EVAL_CONFIGS := "['configs/evaluate.json','configs/demo.json']"

.PHONY: install demo test clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,clients]"
	$(PY) -m pip install --quiet --no-deps $(CLIENT_SPECS)
	touch $(INSTALLED)

demo: $(INSTALLED)
	@$(STACK) start=$$(date +%s); \
	$(PY) scripts/make_synthetic.py --out $(DEMO_DATA) --cases 36 --size 48 --seed 0 && \
	$(PY) -m monai.bundle run --config_file $(DEMO_CONFIGS) --dataset_dir $(DEMO_DATA) && \
	$(PY) -m monai.bundle run --config_file $(EVAL_CONFIGS) --dataset_dir $(DEMO_DATA) && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; heatmap: eval/combinations.png, table: eval/summary.md;" \
		"runs: mlflow ui --backend-store-uri sqlite:///eval/mlruns.db"

test: $(INSTALLED)
	$(VENV)/bin/ruff check bundle tests scripts
	$(STACK) $(PY) -m pytest -q

clean:
	rm -rf eval mlruns models/*.pt models/*.ts $(DEMO_DATA)
