#!/bin/sh
# docs/phf.md "Twice the budget, and untied embeddings": dense PII, MLE and conditional training,
# seeds 0-2, tied and untied embeddings, at 1,048,576 and 2,097,152 training tokens, and seeds 3-4
# untied at 1,048,576 (28 runs, about 3-9 minutes each on one thread), then the final evaluation
# and one table per budget.
# From the repository root, after build_corpora.py.
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
for budget in 1m 2m; do
  tokens=$([ $budget = 1m ] && echo 1048576 || echo 2097152)
  root=runs/phf_$budget/pii_dense
  for seed in 0 1 2 3 4; do for obj in mle conditional; do for tie in true false; do
    [ $seed -ge 3 ] && { [ $tie = true ] || [ $budget = 2m ]; } && continue
    name=${obj}$([ $tie = false ] && echo _untied || true)_seed${seed}
    [ -f $root/$name/final/model.safetensors ] && continue
    python -m bayesalign.cli pretrain experiments/phf/pii_dense.yaml --out $root/$name \
      --set training.tokens=$tokens --set objective.type=$obj --set training.seed=$seed \
      --set model.tie_embeddings=$tie
  done; done; done
  python experiments/phf/final_eval.py pii_dense --runs runs/phf_$budget --suffix _$budget
  python experiments/phf/budget_table.py docs/results/phf_final_eval_pii_dense_$budget.jsonl $root
done
