#!/usr/bin/env bash
# The density path against separate runs, magnitude pruning and a penalized sweep, on one
# problem file, per seed (docs/path.md). Every run is resumable: run it again after a stop.
#
#   bash docs/scripts/path_front.sh PROBLEM OUT PATH_EPOCHS RUN_EPOCHS "SEEDS" "KINDS" ["PENALTIES"]
#   FINETUNE=0.0833 bash docs/scripts/path_front.sh problems/fashion_mlp_defaults.toml runs/path-mlp 6 2 \
#       "0 1 2" "path separate"
#   bash docs/scripts/path_front.sh problems/fashion_mlp_defaults.toml runs/path-mlp 6 2 "0" "magnitude penalized" \
#       "0.3 1 3 10"
#
# KINDS: path (PATH_EPOCHS epochs through ε = 0.5, 0.3, 0.2, 0.1, each point then trains its
# open weights for FINETUNE x PATH_EPOCHS, default 0.1, at learning rates decayed to zero;
# NO_DECAY=1 keeps the run's rates), separate (one constrained run per ε),
# magnitude (one run per ε: dense for half the run, then pruned and fine-tuned), penalized (one
# run per λ); the runs other than the path are RUN_EPOCHS long. With 6, 2 and FINETUNE=0.0833
# the path (6 + 4 x 0.5 epochs) costs what the four separate runs cost (4 x 2 epochs). Then:
# ctrlsparse compare OUT/path/* OUT/*/*/* --out OUT/report and python docs/scripts/path_table.py OUT.
set -euo pipefail
problem=$1 out=$2 path_epochs=$3 run_epochs=$4 seeds=$5 kinds=$6 penalties=${7:-}
cs=${CTRLSPARSE:-ctrlsparse}
densities="0.5 0.3 0.2 0.1"
go() {  # go DIR COMMAND...: skip a finished run, resume a stopped one
    local dir=$1; shift
    if [ -f "$dir/summary.json" ]; then return; fi  # finished (a path writes its summary last)
    local again=()
    if [ -d "$dir" ]; then again=(--resume); fi
    "$@" --out "$dir" --quiet "${again[@]}"
}
for seed in $seeds; do
    for kind in $kinds; do
        case $kind in
        path) go "$out/path/seed$seed" $cs path "$problem" --densities "${densities// /,}" \
                --epochs "$path_epochs" --finetune "${FINETUNE:-0.1}" --seed "$seed" ${NO_DECAY:+--no-decay} ;;
        separate)
            for eps in $densities; do
                go "$out/separate/eps$eps/seed$seed" $cs run "$problem" --target-density "$eps" \
                    --epochs "$run_epochs" --seed "$seed"
            done ;;
        magnitude)  # dense for the first half, pruned, then fine-tuned for the second half
            for eps in $densities; do
                go "$out/magnitude/eps$eps/seed$seed" $cs run "$problem" --method magnitude --target-density "$eps" \
                    --finetune-epochs $(( run_epochs / 2 )) --epochs "$run_epochs" --seed "$seed"
            done ;;
        penalized)
            for lam in $penalties; do
                go "$out/penalized/lam$lam/seed$seed" $cs run "$problem" --penalty "$lam" --epochs "$run_epochs" \
                    --seed "$seed"
            done ;;
        *) echo "unknown kind $kind (path, separate, magnitude, penalized)" >&2; exit 2 ;;
        esac
    done
done
