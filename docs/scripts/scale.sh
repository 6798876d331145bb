#!/usr/bin/env bash
# docs/scale.md: time per epoch and final density / error with 1 and 2 CPU processes (gloo),
# alternating 1 and 2 processes, REPS times each. Run from the repository root:
#     bash docs/scripts/scale.sh [OUT]
# Each process uses one thread (torchrun's default OMP_NUM_THREADS=1; --nproc_per_node=1 too).
set -euo pipefail
OUT=${1:-runs/scale}
REPS=${REPS:-2}
PY=${PY:-.venv-dev/bin}
mkdir -p "$OUT"
run() {  # name problem epochs procs rep
  "$PY/torchrun" --standalone --nproc_per_node="$4" -m ctrlsparse run "$2" --target-density 0.3 \
    --epochs "$3" --out "$OUT/$1-p$4-r$5" --overwrite --quiet 2>/dev/null | tail -1
}
for rep in $(seq 1 "$REPS"); do
  for procs in 1 2; do
    run digits problems/digits_mlp.toml 20 "$procs" "$rep"
    run fashion problems/fashion_mlp_defaults.toml 3 "$procs" "$rep"
  done
done
"$PY/python" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for summary in sorted(out.glob("*/summary.json")):
    name, procs, _ = summary.parent.name.rsplit("-", 2)
    s = json.loads(summary.read_text())
    epochs = json.loads((summary.parent / "config.json").read_text())["train"]["epochs"]
    rows.setdefault((name, procs), []).append((s["train_seconds"] / epochs, s["realized_density"], s["test_error"]))
print("| problem | processes | s / epoch (median [min, max]) | realized density | test error % |")
print("|---|---|---|---|---|")
for (name, procs), values in sorted(rows.items()):
    times = [v[0] for v in values]
    print(f"| {name} | {procs[1:]} | {statistics.median(times):.2f} [{min(times):.2f}, {max(times):.2f}] | "
          f"{values[0][1]:.4f} | {100 * values[0][2]:.2f} |")
PY
