# One command per job; every job runs `setup` first, so each works on a fresh clone.
# Results on the default scale come from the generated miniature stand-in (scale=mini);
# add ARGS="scale=paper" for the real datasets (see README).
PY := .venv/bin/python
ARGS ?=
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export MPLBACKEND := Agg

.PHONY: setup test test-fast data smoke smoke-paper reproduce-table1 reproduce-table3 reproduce-table4 \
        reproduce-methods reproduce-calibration reproduce-all figure-lmc figure-rebasin figure-classification \
        fashion-mnist reproduce-tta figures report bench clean

setup:
	@bash scripts/setup.sh

# The whole suite that fits on a 2-core CPU machine (slow and SLURM tests included).
test: setup
	$(PY) -m pytest -q -m "not gpu"

# The fast subset, for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not gpu and not slurm"

data: setup
	$(PY) -m experiments.miniature

# Every stage at a few iterations on a small miniature.
smoke: setup
	$(PY) -m experiments.reproduce study=table1 scale=smoke seeds=[0] runs_root=runs/smoke results_dir=results/smoke

# The paper's exact path (paper rows, HRDA, 1024 crops, slide test) on the paper-shaped
# stand-in at native resolutions, on a CPU: configs/scale/paper_shape.yaml says what differs.
smoke-paper: setup
	$(PY) -m experiments.reproduce study=table1 scale=paper_shape seeds=[0] workers=1 \
	  study.curves.shared_pretraining.points=3 runs_root=runs/smoke_paper results_dir=results/smoke_paper $(ARGS)

reproduce-table1: setup
	$(PY) -m experiments.reproduce study=table1 $(ARGS)

reproduce-table3: setup
	$(PY) -m experiments.reproduce study=table3 $(ARGS)

reproduce-table4: setup
	$(PY) -m experiments.reproduce study=table4 $(ARGS)

# Every merging method on the two- and four-target settings (docs/merging_methods.md).
reproduce-methods: setup
	$(PY) -m experiments.reproduce study=methods $(ARGS)

# The stand-in's preconditions on their own (docs/calibration.md).
reproduce-calibration: setup
	$(PY) -m experiments.reproduce study=calibration $(ARGS)

figure-lmc: setup
	$(PY) -m experiments.reproduce study=lmc $(ARGS)

figure-rebasin: setup
	$(PY) -m experiments.reproduce study=rebasin $(ARGS)

# Real Fashion-MNIST from Debian's dataset-fashion-mnist package (installed when root).
FASHION_MNIST := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ ! -d $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "Fashion-MNIST missing: install Debian's dataset-fashion-mnist or pass ARGS=\"data.root=<folder with *-ubyte.gz>\""; exit 1; fi; \
	fi

figure-classification: setup fashion-mnist
	$(PY) -m experiments.classify $(ARGS)

reproduce-tta: setup
	$(PY) -m experiments.adapt build_missing=true $(ARGS)

figures: figure-lmc figure-rebasin figure-classification

# Every study of the README, one after the other (models shared between studies train once).
reproduce-all: reproduce-calibration reproduce-table1 reproduce-table3 reproduce-table4 reproduce-methods \
               figure-lmc figure-rebasin reproduce-tta figure-classification

report: setup
	$(PY) -m analysis.report --results results

bench: setup
	$(PY) benchmarks/merge.py
	$(PY) benchmarks/evaluate.py --threads 1
	$(PY) benchmarks/interpolate.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/adapt.py

clean:
	rm -rf runs results outputs multirun wandb
