#!/bin/sh
# A `bayesalign compare` split into queues of single-threaded runs, one `compare` folder per
# (method, seed) under $OUT: each argument is one queue ("method:seed method:seed ..."), run in
# order; the queues run side by side (one per core). $SET adds one --set override to every run.
#   CONFIG=configs/smollm2_rm_vs_dm.yaml OUT=runs/rm_vs_dm_lr1e-4 SET=training.lr=1e-4 \
#       sh experiments/rm_vs_dm/queues.sh "gdc++:0 ppo:0 gdc++:1" "ppo:1 gdc++:2 ppo:2"
BAYESALIGN=${BAYESALIGN:-.venv/bin/bayesalign}
: "${CONFIG:?set CONFIG to the comparison's config}" "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"

queue() {
    for job in $1; do
        method=${job%:*}
        seed=${job#*:}
        OMP_NUM_THREADS=1 nice "$BAYESALIGN" compare "$CONFIG" --methods "$method" --seeds 1 \
            --set training.seed="$seed" ${SET:+--set "$SET"} \
            --out "$OUT/$method-$seed" >"$OUT/$method-$seed.log" 2>&1
        echo "$(date +%T) $method seed $seed: exit $?"
    done
}

for jobs in "$@"; do
    queue "$jobs" &
done
wait
