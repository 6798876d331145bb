"""Test error of aligned widths at the same ε: no rounding, a rounded decision, block gates.

    for seed in 0 1 2; do for v in "r1:1" "r8:8" "b8:8 --block-gates"; do
      ctrlsparse run problems/fashion_lenet5_defaults.toml --epochs 10 --seed $seed \\
          --round-to ${v#*:} --out OUT/lenet/${v%%:*}/seed$seed --quiet
    done; done        # and problems/fashion_resnet.toml with --epochs 3 into OUT/resnet
    .venv-dev/bin/python docs/scripts/round_to_table.py OUT [--json docs/results/round_to_accuracy.json]

Reads each run's ``summary.json`` (``OUT/{lenet,resnet}/{r1,r8,b8}/seed{0,1,2}``) and prints two
tables: each variant's final test error per seed, its mean ± std, the error right after the
feasibility phase decided the gates and the realized density; then the paired difference to
``r1`` (same seed, same data order), mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

MODELS = {"lenet": "LeNet-5", "resnet": "ResNet-8"}
VARIANTS = {"r1": "r = 1", "r8": "r = 8, rounded decision", "b8": "r = 8, block gates"}
SEEDS = (0, 1, 2)


def _read(root: Path) -> dict:
    runs = {}
    for model in MODELS:
        for variant in VARIANTS:
            for seed in SEEDS:
                path = root / model / variant / f"seed{seed}" / "summary.json"
                if not path.is_file():
                    raise SystemExit(f"{path}: missing; run the commands in this script's docstring first")
                summary = json.loads(path.read_text())
                runs[model, variant, seed] = {
                    "test_error": summary["test_error"],
                    "test_error_decided": summary["feasibility"]["test_error_decided"],
                    "density": summary["density"],
                }
    return runs


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="OUT of the commands above")
    parser.add_argument("--json", type=Path, help="also write the numbers read here")
    args = parser.parse_args()
    runs = _read(args.root)
    print(
        "| model | variant | test error (%), seeds 0, 1, 2 | mean ± std | right after deciding, mean | realized density |"
    )
    print("|---|---|---|---|---|---|")
    for model, name in MODELS.items():
        for variant, label in VARIANTS.items():
            rows = [runs[model, variant, s] for s in SEEDS]
            errors = [100 * r["test_error"] for r in rows]
            decided = statistics.mean(100 * r["test_error_decided"] for r in rows)
            densities = sorted(r["density"] for r in rows)
            density = f"{densities[0]:.4f}" + (
                f"–{densities[-1]:.4f}" if densities[-1] - densities[0] > 5e-5 else ""
            )
            print(f"| {name} | {label} | {', '.join(f'{e:.2f}' for e in errors)} | "
                  f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f} | {decided:.2f} | {density} |")  # fmt: skip
    print()
    print("| model | variant − r = 1, same seed (points) | seeds 0, 1, 2 | mean ± std |")
    print("|---|---|---|---|")
    for model, name in MODELS.items():
        for variant in ("r8", "b8"):
            differences = [100 * (runs[model, variant, s]["test_error"] - runs[model, "r1", s]["test_error"])
                           for s in SEEDS]  # fmt: skip
            print(f"| {name} | {VARIANTS[variant]} | {', '.join(f'{d:+.2f}' for d in differences)} | "
                  f"{_spread(differences)} |")  # fmt: skip
    if args.json:
        records = [{"model": m, "variant": v, "seed": s, **r} for (m, v, s), r in runs.items()]
        args.json.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
