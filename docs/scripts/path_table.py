"""The table of docs/path.md: each path point beside the separate runs at its ε (mean and 95%
interval over seeds), the magnitude runs and the penalized sweep, and the wall-clock costs.

    python docs/scripts/path_table.py runs/path-mlp

reads OUT/path/seed*/ (density paths) and OUT/{separate,magnitude}/eps*/seed*/ and
OUT/penalized/lam*/seed*/ (runs), as docs/scripts/path_front.sh writes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrlsparse.experiments.sweeps import mean_ci
from ctrlsparse.runs.store import load_path, read_summary


def _cell(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "–"
    mean, ci = mean_ci([scale * v for v in values])
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    paths = sorted((args.out / "path").glob("seed*"))
    points: dict[float, list] = {}
    path_seconds = []
    for directory in paths:
        if not (directory / "summary.json").exists():
            continue
        path_seconds.append(read_summary(directory).train_seconds)
        for run in load_path(directory):
            points.setdefault(run.summary.targets["model"], []).append(run.summary)
    print(f"{len(path_seconds)} finished paths; seeds: {', '.join(p.name for p in paths)}\n")
    print(
        "| ε | path: realized density | path: test error (%) | separate runs: realized "
        "| separate: error (%) | path − separate (points) | magnitude: error (%) |"
    )
    print("|---|---|---|---|---|---|---|")
    separate_seconds = []
    for eps in sorted(points, reverse=True):
        ours = points[eps]
        theirs = [read_summary(d) for d in sorted((args.out / "separate" / f"eps{eps}").glob("seed*"))
                  if (d / "summary.json").exists()]  # fmt: skip
        magnitude = [read_summary(d) for d in sorted((args.out / "magnitude" / f"eps{eps}").glob("seed*"))
                     if (d / "summary.json").exists()]  # fmt: skip
        separate_seconds += [s.train_seconds for s in theirs]
        gap = "–"
        if theirs:
            gap = _cell([o.test_error - t.test_error for o, t in zip(ours, theirs)])
        print(
            f"| {eps:g} | {_cell([s.realized_density for s in ours], 1, 4)} | "
            f"{_cell([s.test_error for s in ours])} | {_cell([s.realized_density for s in theirs], 1, 4)} | "
            f"{_cell([s.test_error for s in theirs])} | {gap} | {_cell([s.test_error for s in magnitude])} |"
        )
    penalized = sorted(
        (args.out / "penalized").glob("lam*/seed*"), key=lambda d: (float(d.parent.name[3:]), d.name)
    )
    if penalized:
        print("\n| penalized λ | realized density | test error (%) |\n|---|---|---|")
        for directory in penalized:
            if (directory / "summary.json").exists():
                s = read_summary(directory)
                lam = next(iter(s.penalties.values()))
                print(f"| {lam:g} ({directory.name}) | {s.realized_density:.4f} | {100 * s.test_error:.2f} |")
    if path_seconds and separate_seconds:
        per_path = sum(path_seconds) / len(path_seconds)
        per_set = sum(separate_seconds) / len(path_seconds)
        print(
            f"\nwall clock per seed: the path {per_path:.0f} s, the four separate runs {per_set:.0f} s "
            f"(ratio {per_path / per_set:.2f})"
        )


if __name__ == "__main__":
    main()
