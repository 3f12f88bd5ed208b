#!/bin/sh
# docs/phf.md "One control token per document": dense PII at 1,048,576 training tokens with
# corpus.unit=documents (conditional training tags each document once), MLE and conditional
# training, untied embeddings seeds 0-4 and tied seeds 0-2 (16 runs, 3-5 minutes each on one
# thread), then the final evaluation, the table and the plot against the sentence-level runs of
# budgets.sh; then untied seeds 0-2 at 2,097,152 tokens (6 runs, about 6 minutes each) and their
# table. From the repository root, after build_corpora.py and budgets.sh.
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
root=runs/phf_docs_1m/pii_dense
for seed in 0 1 2 3 4; do for obj in mle conditional; do for tie in false true; do
  [ $seed -ge 3 ] && [ $tie = true ] && continue
  name=${obj}$([ $tie = false ] && echo _untied || true)_seed${seed}
  [ -f $root/$name/final/model.safetensors ] && continue
  python -m bayesalign.cli pretrain experiments/phf/pii_dense.yaml --out $root/$name \
    --set training.tokens=1048576 --set objective.type=$obj --set training.seed=$seed \
    --set model.tie_embeddings=$tie --set corpus.unit=documents
done; done; done
python experiments/phf/final_eval.py pii_dense --runs runs/phf_docs_1m --suffix _docs_1m
python experiments/phf/budget_table.py docs/results/phf_final_eval_pii_dense_docs_1m.jsonl $root
python experiments/phf/granularity_plot.py \
  sentences=runs/phf_1m/pii_dense:docs/results/phf_final_eval_pii_dense_1m.jsonl \
  documents=$root:docs/results/phf_final_eval_pii_dense_docs_1m.jsonl
root=runs/phf_docs_2m/pii_dense
for seed in 0 1 2; do for obj in mle conditional; do
  name=${obj}_untied_seed${seed}
  [ -f $root/$name/final/model.safetensors ] && continue
  python -m bayesalign.cli pretrain experiments/phf/pii_dense.yaml --out $root/$name \
    --set training.tokens=2097152 --set objective.type=$obj --set training.seed=$seed \
    --set model.tie_embeddings=false --set corpus.unit=documents
done; done
python experiments/phf/final_eval.py pii_dense --runs runs/phf_docs_2m --suffix _docs_2m
python experiments/phf/budget_table.py docs/results/phf_final_eval_pii_dense_docs_2m.jsonl $root
