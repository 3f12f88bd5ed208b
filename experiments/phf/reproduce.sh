#!/bin/sh
# The whole PHF experiment of docs/phf.md, from the repository root (about 45 minutes on 2 shared
# cores, one thread): corpora, 18 pretraining runs, final evaluation, control-token check, red
# teaming, then the tables, plots and raw metrics under docs/results/phf*.
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
python experiments/phf/build_corpora.py
python experiments/phf/run.py pep8 pii
python experiments/phf/final_eval.py
python experiments/phf/control_check.py | tee docs/results/phf_control_check.jsonl
sh experiments/phf/red_team.sh
python experiments/phf/summarize.py
