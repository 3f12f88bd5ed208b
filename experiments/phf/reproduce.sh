#!/bin/sh
# The whole PHF experiment of docs/phf.md, from the repository root (about 110 minutes on 2 cores,
# one thread, one run at a time): corpora, 43 pretraining runs (pep8 with seeds 0-2, pii_dense
# with seeds 0-1, pii with seed 0), final evaluation, control-token check, red teaming (pii), then the
# tables, plots and raw metrics under docs/results/phf*.
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
python experiments/phf/build_corpora.py
python experiments/phf/run.py pep8 --seeds 1 2
python experiments/phf/run.py pii
python experiments/phf/run.py pii_dense --seeds 1
python experiments/phf/final_eval.py
python experiments/phf/control_check.py | tee docs/results/phf_control_check.jsonl
sh experiments/phf/red_team.sh
python experiments/phf/summarize.py
