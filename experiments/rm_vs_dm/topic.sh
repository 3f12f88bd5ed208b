#!/bin/sh
# The RM-vs-DM comparison's second target (docs/rm-vs-dm.md, "A second target: food"): five
# methods × seeds 0-2 on configs/smollm2_rm_vs_dm_topic.yaml, as two queues of single-threaded
# runs (one per core), each run its own `bayesalign compare` folder under $OUT. Draw the pool
# first (`bayesalign eval configs/smollm2_rm_vs_dm_topic.yaml`), or both queues draw it at once.
#   sh experiments/rm_vs_dm/topic.sh && python experiments/rm_vs_dm/summarise.py runs/rm_vs_dm_topic/*/ \
#       --out docs/results/rm_vs_dm_smollm2_topic --b-label "mentions food"
OUT=${OUT:-runs/rm_vs_dm_topic}
BAYESALIGN=${BAYESALIGN:-.venv/bin/bayesalign}
mkdir -p "$OUT"

queue() {
    for job in "$@"; do
        method=${job%:*}
        seed=${job#*:}
        OMP_NUM_THREADS=1 nice "$BAYESALIGN" compare configs/smollm2_rm_vs_dm_topic.yaml \
            --methods "$method" --seeds 1 --set training.seed="$seed" \
            --out "$OUT/$method-$seed" >"$OUT/$method-$seed.log" 2>&1
        echo "$(date +%T) $method seed $seed: exit $?"
    done
}

queue gdc++:0 dpg:0 reinforce:0 kl-reinforce:0 ppo:0 gdc++:2 dpg:2 reinforce:2 &
queue gdc++:1 dpg:1 reinforce:1 kl-reinforce:1 ppo:1 kl-reinforce:2 ppo:2 &
wait
