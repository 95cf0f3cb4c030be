#!/usr/bin/env bash
# Start, inspect or stop the single-node SLURM cluster used for sweep tests.
#   scripts/slurm_cluster.sh start|status|stop [--state-dir DIR]   (default: $MTDA_SLURM_DIR)
# `start` prints the `export SLURM_CONF=...` line that points sbatch/sacct/Hydra at it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTHONPATH="tests/support${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m slurm_cluster "$@"
