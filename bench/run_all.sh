#!/usr/bin/env bash
# Runs every benchmark in the order of cost (cheap first); each writes bench/results/NAME.json and NAME.md.
# Not part of the pytest run. About an hour on 2 quiet cores with these budgets (search_quality alone ~30 min);
# pass smaller budgets to the scripts for a quicker look (see bench/README.md). Latency figures need a quiet
# machine: run nothing else meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# one torch thread per process: on 2 cores shared with other users, the default (one per core) oversubscribes
# them and a 30-step fine-tune went from 5 s to 170 s in our runs
export OMP_NUM_THREADS=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
$PY bench/cost_model.py --samples 50
$PY bench/eval_cost.py --plans 20 --finetune-steps 30
$PY bench/ray_scaling.py --trials 8 --finetune-steps 30 --workers 1 2
$PY bench/headline.py --strategy tpe --trials 12 --epochs 3
$PY bench/search_quality.py --trials 30 --seeds 0 1 2 --finetune-steps 30
$PY bench/search_quality.py --trials 30 --seeds 0 1 2 --finetune-steps 0 --name search_quality_proxy
$PY bench/search_proof.py --trials 12 --seeds 0 1 2 --methods uniform tp-global tpe tpe-macs --budgets 0.35 0.5 --final-epochs 1
