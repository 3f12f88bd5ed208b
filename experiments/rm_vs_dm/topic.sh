#!/bin/sh
# The RM-vs-DM comparison's second target (docs/rm-vs-dm.md, "A second target: food"): five
# methods × seeds 0-2 on configs/smollm2_rm_vs_dm_topic.yaml, as two queues of single-threaded
# runs (one per core). Draw the pool first (`bayesalign eval configs/smollm2_rm_vs_dm_topic.yaml`),
# or both queues draw it at once.
#   sh experiments/rm_vs_dm/topic.sh && python experiments/rm_vs_dm/summarise.py runs/rm_vs_dm_topic/*/ \
#       --out docs/results/rm_vs_dm_smollm2_topic --b-label "mentions food"
CONFIG=configs/smollm2_rm_vs_dm_topic.yaml OUT=${OUT:-runs/rm_vs_dm_topic} exec sh "$(dirname "$0")/queues.sh" \
    "gdc++:0 dpg:0 reinforce:0 kl-reinforce:0 ppo:0 gdc++:2 dpg:2 reinforce:2" \
    "gdc++:1 dpg:1 reinforce:1 kl-reinforce:1 ppo:1 kl-reinforce:2 ppo:2"
