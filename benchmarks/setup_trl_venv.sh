#!/usr/bin/env bash
# Creates .venv-trl: TRL in its own virtual environment, so its pins never touch .venv.
# torch is installed first and pinned, so that pip's later resolve keeps the local CPU build.
#   bash benchmarks/setup_trl_venv.sh && .venv-trl/bin/python benchmarks/bench_trl.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-trl
TORCH=2.13.0
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "torch==$TORCH"
"$VENV/bin/pip" install --quiet trl "torch==$TORCH"
"$VENV/bin/python" - "$TORCH" <<'PY'
import sys
import torch
import trl
import transformers

want = sys.argv[1]
have = torch.__version__.split("+")[0]
if have != want:
    sys.exit(f"pip replaced torch: {torch.__version__} installed, {want} wanted")
print(f"ok: torch {torch.__version__}, trl {trl.__version__}, transformers {transformers.__version__}")
PY
