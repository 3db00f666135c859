# Set-up and everyday commands. Both `make test` and `make demo` work from a fresh clone with only Python present:
# they create (or refresh) a virtualenv, install torch first (TORCH_SPEC picks the build), then the package.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Serial on purpose: the learning tests are tuned for torch using both cores; two xdist workers oversubscribe them.
PYTEST_ARGS ?= --durations=15
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo style quality clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# ruff (pinned in the test extra) lints and formats what TRL's rule set covers; CI runs `make quality` first.
CHECK_DIRS := trl_ext tests examples benchmarks

style: $(STAMP)
	$(BIN)/ruff check --fix $(CHECK_DIRS)
	$(BIN)/ruff format $(CHECK_DIRS)

quality: $(STAMP)
	$(BIN)/ruff check $(CHECK_DIRS)
	$(BIN)/ruff format --check $(CHECK_DIRS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Each example runs offline on tiny random models with `--tiny`; every trainer issue adds its example here.
DEMO_EXAMPLES := examples/tiny_models.py examples/tprl_grpo_vlm.py examples/grpo_extended.py examples/flow_rtpo.py examples/sedd_sft.py examples/sedd_latex_ppo.py examples/diffusion_lm_grpo.py examples/rlhf_pipeline.py examples/edit_grpo.py

demo: $(STAMP)
	@echo "make demo: offline runs on tiny random models (no download): $(DEMO_EXAMPLES)"
	@set -e; for ex in $(DEMO_EXAMPLES); do \
		name=$$(basename $$ex .py); \
		echo ">>> $$ex --tiny --output_dir outputs/demo/$$name"; \
		HF_HUB_OFFLINE=1 $(BIN)/python $$ex --tiny --output_dir outputs/demo/$$name; \
	done
	@echo ">>> examples/flow_rtpo.py --tiny --mode flow_grpo --output_dir outputs/demo/flow_grpo"
	HF_HUB_OFFLINE=1 $(BIN)/python examples/flow_rtpo.py --tiny --mode flow_grpo --output_dir outputs/demo/flow_grpo
	@echo ">>> python -m trl_ext.evaluation.image_edit --tiny --resume --output_dir outputs/demo/image_edit"
	HF_HUB_OFFLINE=1 $(BIN)/python -m trl_ext.evaluation.image_edit --tiny --resume --output_dir outputs/demo/image_edit

clean:
	rm -rf $(VENV) build dist *.egg-info outputs
