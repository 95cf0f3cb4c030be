#!/usr/bin/env bash
# Create .venv and install the pinned stack, idempotently.
# A stamp file records the hash of everything that decides the install; when it
# matches, nothing is done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
WHEELS=${MMCV_WHEELS:-../shared/wheels}
STAMP=$VENV/.setup-stamp
want=$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import mmseg, mmcv.ops, fusion" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  if [ -d "$WHEELS" ] && ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    echo "setup: installing mmcv 2.1.0 from the prebuilt wheel in $WHEELS"
    $PIP install --find-links "$WHEELS" mmcv==2.1.0
  else
    # No prebuilt wheel: build from the sdist against the installed torch
    # (about 20 minutes on 2 cores). The build imports pkg_resources.
    echo "setup: building mmcv 2.1.0 from source (no wheel in $WHEELS); this takes a while"
    $PIP install "setuptools<70" wheel ninja
    MMCV_WITH_OPS=1 $PIP install --no-build-isolation mmcv==2.1.0
  fi
fi
$PIP install -r requirements.txt
$PIP install --no-deps -e .
# Compile the merge kernel now (else on the first merge); says which engine merges use.
"$VENV/bin/python" -m fusion || true
echo "$want" > "$STAMP"
echo "setup: .venv ready"
