#!/usr/bin/env bash
# Creates .venv-disco: the disco toolkit (naver/disco, PyPI disco-generation 1.1.1) in its own
# virtual environment, so its pins never touch .venv. See shared/reference/peers.md.
#   bash benchmarks/setup_disco_venv.sh && .venv-disco/bin/python -c "from disco.tuners import DPGTuner"
#
# disco 1.1.1 declares Python < 3.11 but runs on 3.11: it is installed with --no-deps
# --ignore-requires-python after the few packages it imports at run time (torch, pinned first so
# pip keeps the local CPU build; transformers <= 4.40.2, whose private generate helpers it calls;
# numpy, tqdm, datasets). Its published package lacks disco/tuners/losses/misc/ema_baseline.py,
# which its JS, TV and reverse-KL losses import (so `from disco.tuners import DPGTuner` fails);
# the DPG tuner's KL loss does not use it. We write a small stand-in of our own (an exponential
# moving-average baseline with the name those modules import), not disco's code.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-disco
TORCH=2.13.0
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "torch==$TORCH"
"$VENV/bin/pip" install --quiet "torch==$TORCH" "transformers==4.40.2" "tokenizers>=0.19,<0.20" \
    numpy tqdm datasets safetensors
"$VENV/bin/pip" install --quiet --no-deps --ignore-requires-python "disco-generation==1.1.1"

MISC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/disco/tuners/losses/misc
mkdir -p "$MISC"
test -f "$MISC/__init__.py" || : >"$MISC/__init__.py"
cat >"$MISC/ema_baseline.py" <<'PY'
"""Stand-in written for bayesalign's benchmarks (not disco's code): the module that disco 1.1.1's
JS, TV and reverse-KL losses import and its published package lacks. The DPG tuner's KL loss
does not use it."""

import torch


class EMABaseline:
    """Exponential moving average b of the mean reward; advantage(r) = r - b, then b is updated."""

    def __init__(self, weight=0.99):
        self.weight = float(weight)
        self.value = None

    def advantage(self, rewards):
        mean = float(torch.as_tensor(rewards).detach().mean())
        baseline = mean if self.value is None else self.value
        self.value = mean if self.value is None else self.weight * self.value + (1 - self.weight) * mean
        return rewards - baseline
PY

"$VENV/bin/python" - "$TORCH" <<'PY'
import os
import sys

os.environ.setdefault("DISCO_SAVE_PATH", "/tmp")
import torch
import transformers
from disco.tuners import DPGTuner  # noqa: F401  (fails without the stand-in)

want = sys.argv[1]
have = torch.__version__.split("+")[0]
if have != want:
    sys.exit(f"pip replaced torch: {torch.__version__} installed, {want} wanted")
print(f"ok: torch {torch.__version__}, transformers {transformers.__version__}, disco 1.1.1")
PY
