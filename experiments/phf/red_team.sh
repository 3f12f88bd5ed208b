#!/bin/sh
# Red-team the PII task's MLE and conditional models with the same red LM, prompts and seed.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
cfg=experiments/phf/red_team_pii.yaml
bayesalign red-team $cfg --out runs/phf/red_team/pii_mle --set model=runs/phf/pii/mle/final
bayesalign red-team $cfg --out runs/phf/red_team/pii_conditional --set model=runs/phf/pii/conditional/final \
  --set 'prefix=<|endoftext|><|good|>' --set 'banned_tokens=["<|good|>", "<|bad|>"]'
