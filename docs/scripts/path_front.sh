#!/usr/bin/env bash
# The density path against separate runs, magnitude pruning and a penalized sweep, on one
# problem file, per seed (docs/path.md). Every run is resumable: run it again after a stop.
#
#   bash docs/scripts/path_front.sh PROBLEM OUT PATH_EPOCHS RUN_EPOCHS "SEEDS" "PENALTIES"
#   bash docs/scripts/path_front.sh problems/fashion_mlp_defaults.toml runs/path-mlp 4 2 "0 1 2" "0.3 1 3 10"
#
# The path trains PATH_EPOCHS epochs through ε = 0.5, 0.3, 0.2, 0.1 and gives each point a
# tenth of that to train its open weights alone (1.4 x PATH_EPOCHS in all); every other run is
# RUN_EPOCHS long, one per ε (or λ). Then: ctrlsparse compare OUT/* --out OUT/report and
# python docs/scripts/path_table.py OUT.
set -euo pipefail
problem=$1 out=$2 path_epochs=$3 run_epochs=$4 seeds=$5 penalties=$6
cs=${CTRLSPARSE:-ctrlsparse}
densities="0.5 0.3 0.2 0.1"
go() {  # run DIR ARGS...: skip a finished run, resume a stopped one
    local dir=$1; shift
    if [ -f "$dir/summary.json" ]; then return; fi  # a finished run (a path writes its summary last)
    local again=()
    [ -d "$dir" ] && again=(--resume)
    "$@" --out "$dir" --quiet "${again[@]}"
}
for seed in $seeds; do
    go "$out/path/seed$seed" $cs path "$problem" --densities "${densities// /,}" --epochs "$path_epochs" --seed "$seed"
    for eps in $densities; do
        go "$out/separate/eps$eps/seed$seed" $cs run "$problem" --target-density "$eps" --epochs "$run_epochs" --seed "$seed"
        go "$out/magnitude/eps$eps/seed$seed" $cs run "$problem" --method magnitude --target-density "$eps" \
            --epochs "$run_epochs" --seed "$seed"
    done
    for lam in $penalties; do
        go "$out/penalized/lam$lam/seed$seed" $cs run "$problem" --penalty "$lam" --epochs "$run_epochs" --seed "$seed"
    done
done
