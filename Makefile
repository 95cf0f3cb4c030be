# One command per job; every job runs `setup` first, so each works on a fresh clone.
PY := .venv/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export MPLBACKEND := Agg

.PHONY: setup test test-fast data reproduce-table1 clean

setup:
	@bash scripts/setup.sh

# The whole suite that fits on a 2-core CPU machine (slow tests included).
test: setup
	$(PY) -m pytest -q -m "not gpu"

# The fast subset, for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not gpu and not slurm"

data: setup
	$(PY) -m experiments.miniature

clean:
	rm -rf runs results outputs multirun wandb
