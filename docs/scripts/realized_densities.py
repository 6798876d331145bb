"""Per-layer realized densities of a sweep's runs, mean over seeds, one row per setting.

``ctrlsparse reproduce SWEEP --table-only`` tabulates the model-wise numbers; this adds
what purging removes layer by layer (``realized_densities`` in each ``summary.json``).

    .venv-dev/bin/python docs/scripts/realized_densities.py problems/sweeps/structure_fashion_resnet.toml \
        runs/structure-resnet
"""

from __future__ import annotations

import statistics
import sys

from ctrlsparse.experiments.sweeps import load_sweep, sweep_runs


def main(sweep_path: str, out: str) -> None:
    finished = sweep_runs(load_sweep(sweep_path), out)
    layers = next(iter(r.summary.realized_densities for rs in finished.values() for r in rs), {})
    print("| setting | seeds | test error % | realized density | " + " | ".join(layers) + " |")
    print("|---|---|---|---|" + "---|" * len(layers))
    for label, runs in finished.items():
        if not runs:
            continue
        errors = [100 * r.summary.test_error for r in runs]
        spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
        density = statistics.mean(r.summary.realized_density for r in runs)
        per_layer = [statistics.mean(r.summary.realized_densities[n] for r in runs) for n in layers]
        cells = " | ".join(f"{v:.3f}" for v in per_layer)
        print(f"| {label} | {len(runs)} | {statistics.mean(errors):.2f}{spread} | {density:.3f} | {cells} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SWEEP_FILE OUT_DIR")
    main(sys.argv[1], sys.argv[2])
