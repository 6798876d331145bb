"""Purged speed-up against the FLOP ideal, with and without hardware-aligned widths (round_to).

    .venv-dev/bin/python docs/scripts/purge_round.py --threads 2    # every model; --models picks some

For each model, with random weights (no download, no training):

1. Hand-set gates: in every gate group, a fixed open fraction of the units, chosen at random
   (``--seed``), gets log α ~ U(1, 4) and the rest log α ~ U(-6, -3), so that P(z ≠ 0)
   ranks the units and the test-time gates (eq. 13 of Louizos et al., 2018) open exactly
   the chosen ones. ``lenet5_paper`` is LeNet-5-Caffe with the paper's groups and the open
   fractions (0.5, 0.3, 0.7, 0.1) of docs/performance.md's earlier measurement; the others
   use ``structure="neuron"`` and ``--fraction`` in every group.
2. ε = the realized model density of those gates. Each variant is the same dense model
   sparsified with ``round_to`` r, the same gates, and
   ``ctrlsparse.problem.feasibility.decide`` on a ``SparsityProblem(target_density=ε)``:
   ``r=1`` keeps the hand-set gates (they sit at ε), ``r=8`` and ``r=16`` round the
   decision to multiples of r (realized density ≤ ε). ``pad 8`` is ``round_to=8`` without
   a decision: purge keeps closed units, zeroed, up to the next multiple of 8 (same
   density as ``r=1``, more FLOPs).
3. ``cs.purge`` in eval mode; the purged logits must equal the gated model's on the
   benchmark batch (relative error <= 1e-5).
4. FLOPs of the eval forward at the benchmark batch (``torch.utils.flop_counter``); ideal =
   dense FLOPs / purged FLOPs.
5. Eval forward time (``torch.no_grad``) of the dense model and of every purged variant,
   alternating in one process with the order rotated every repetition
   (``ctrlsparse.experiments.bench.alternate_many``); measured = dense time / purged time
   per repetition, median [min, max]; fraction = median measured / ideal. The work ideal
   (``ctrlsparse.experiments.bench.work_ideal``) lets the operators that are not
   convolutions or matrix products (pooling, BatchNorm, activations, adds) shrink with the
   elements they write instead of the FLOPs. ``--channels-last`` converts the dense model,
   every purged model and the input to ``torch.channels_last``. ``--clock cpu``
   times the process's CPU seconds instead of wall seconds: with ``--threads 1`` on a
   machine that other jobs load, that measures the work rather than the waiting.
   ``--fold-batchnorm`` folds every eval-mode BatchNorm into the convolution before it
   (``torch.fx.experimental.optimization.fuse``), in the dense and the purged models alike;
   it stops where a BatchNorm is left unfolded or the logits move.

A benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import ctrlsparse as cs
from ctrlsparse.experiments.bench import alternate_many, flops, work_ideal
from ctrlsparse.problem.feasibility import decide

SECONDS_PER_REPETITION = 0.6
"""Dense forward time per repetition; each variant gets as many calls."""


@dataclass
class Case:
    """A model with random weights, its gate structure, the open fraction of each gate group
    (one number for all), an input of batch ``n``, and the benchmark batch size."""

    model: Callable[[], nn.Module]
    structure: str
    fractions: float | tuple[float, ...] | None
    inputs: Callable[[int], torch.Tensor]
    batch: int


def _hf_resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512],
                          depths=[2, 2, 2, 2], layer_type="basic", num_labels=10)  # fmt: skip
    return ResNetForImageClassification(config)


def _convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    # Layer scale 1 (not 1e-6): the MLP branches reach the logits, so the exactness check sees them.
    config = ConvNextConfig(
        layer_scale_init_value=1.0,
        num_channels=3,
        hidden_sizes=[48, 96, 192, 384],
        depths=[2, 2, 2, 2],
        num_labels=10,
    )
    return ConvNextForImageClassification(config)


def _fashion(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28)


def _rgb64(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64)


CASES = {
    "lenet5_paper": Case(cs.lenet5, "paper", (0.5, 0.3, 0.7, 0.1), _fashion, 256),
    "lenet5": Case(cs.lenet5, "neuron", None, _fashion, 256),
    "fashion_resnet": Case(cs.models.fashion_resnet, "neuron", None, _fashion, 256),
    "hf_resnet": Case(_hf_resnet, "neuron", None, _rgb64, 32),
    "convnext": Case(_convnext, "neuron", None, _rgb64, 32),
}
VARIANTS = {"r=1": (1, True), "r=8": (8, True), "r=16": (16, True), "pad 8": (8, False)}
"""Variant: (round_to, whether the feasibility phase decides the gates)."""


def _hand_gates(model: nn.Module, fractions: float | tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """log α of every gate group: ``round(fraction × units)`` random units open, the rest closed."""
    generator = torch.Generator().manual_seed(seed)
    groups = cs.gate_groups(model)
    if isinstance(fractions, float):
        fractions = (fractions,) * len(groups)
    log_alphas = []
    for group, fraction in zip(groups, fractions, strict=True):
        n = group.num_units
        is_open = torch.zeros(n, dtype=torch.bool)
        is_open[torch.randperm(n, generator=generator)[: round(fraction * n)]] = True
        rand = torch.rand(n, generator=generator)
        log_alphas.append(torch.where(is_open, 1 + 3 * rand, -6 + 3 * rand))
    return log_alphas


def _sparsified(
    dense: nn.Module, case: Case, round_to: int, log_alphas: list[torch.Tensor] | None
) -> nn.Module:
    """A sparsified copy of ``dense`` whose gates are ``log_alphas`` (None: as sparsify sets them)."""
    model = copy.deepcopy(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classifier's units reach the logits: left dense, as intended
        cs.sparsify(model, case.structure, example_input=case.inputs(2), round_to=round_to)
    if log_alphas is None:
        return model
    with torch.no_grad():
        for group, log_alpha in zip(cs.gate_groups(model), log_alphas, strict=True):
            group.gate.parameter.copy_(log_alpha)
    return model


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _kept(model: nn.Module) -> str:
    return " ".join(f"{int((g.deterministic() > 0).sum())}" for g in cs.gate_groups(model))


def build(name: str, fraction: float, seed: int) -> tuple[nn.Module, dict, dict, dict, torch.Tensor]:
    """The dense model in eval mode, its purged variants (``VARIANTS``), each variant's realized
    density and kept units per group, and the benchmark batch, steps 1–3 of the module docstring."""
    case = CASES[name]
    torch.manual_seed(seed)
    dense = case.model().eval()
    fractions = case.fractions if case.fractions is not None else fraction
    reference = _sparsified(dense, case, 1, None)
    log_alphas = _hand_gates(reference, fractions, seed)
    reference = _sparsified(dense, case, 1, log_alphas)
    eps = cs.SparsityProblem(reference, target_density=1.0).realized_densities()[0]
    x = case.inputs(case.batch)
    purged, realized, kept = {}, {}, {}
    for variant, (round_to, decided) in VARIANTS.items():
        model = _sparsified(dense, case, round_to, log_alphas)
        problem = cs.SparsityProblem(model, target_density=eps)
        if decided:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a landing below ε by more than a block is reported below
                decide(problem)
        realized[variant], kept[variant] = problem.realized_densities()[0], _kept(model)
        model.eval()
        small = cs.purge(model, x[:1]).eval()
        with torch.no_grad():
            gated_out, purged_out = model(x), small(x)
        gated_out, purged_out = (getattr(o, "logits", o) for o in (gated_out, purged_out))
        error = float((purged_out - gated_out).abs().max() / gated_out.abs().max())
        if error > 1e-5:
            raise RuntimeError(f"{name} {variant}: purged logits differ from the gated model's ({error:.1e})")
        print(f"  {name} {variant}: realized density {realized[variant]:.4f} (ε {eps:.4f}), "
              f"kept units per group {kept[variant]}, logits rel. error {error:.1e}", flush=True)  # fmt: skip
        purged[variant] = small
    return dense, purged, realized, kept, x


def _folded(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` with each BatchNorm folded into the convolution before it (``torch.fx``'s
    ``fuse``, eval mode), checked against the unfolded logits; a model that ``torch.fx`` cannot
    trace raises ``SystemExit`` naming it."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(model)
    except Exception as error:  # torch.fx's trace errors have no common base class
        name = type(model).__name__
        raise SystemExit(f"--fold-batchnorm: torch.fx cannot trace {name} ({error})") from None
    with torch.no_grad():
        before, after = (getattr(o, "logits", o) for o in (model(x), folded(x)))
    error = float((after - before).abs().max() / before.abs().max())
    if error > 1e-5:
        raise RuntimeError(f"folding changed {type(model).__name__}'s logits ({error:.1e})")
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:  # fuse skips a pair it cannot fold: the dense and purged models would differ
        raise RuntimeError(f"{type(model).__name__}: BatchNorm left unfolded at {', '.join(left)}")
    return folded


def benchmark(name: str, args: argparse.Namespace) -> list[list[str]]:
    case = CASES[name]
    dense, purged, realized, kept, x = build(name, args.fraction, args.seed)
    if args.fold_batchnorm:  # dense and purged alike
        dense, purged = _folded(dense, x), {v: _folded(m, x) for v, m in purged.items()}
    if args.channels_last:  # dense and purged alike, and the input
        x = x.contiguous(memory_format=torch.channels_last)
        dense = dense.to(memory_format=torch.channels_last)
        purged = {v: m.to(memory_format=torch.channels_last) for v, m in purged.items()}
    start = time.perf_counter()
    _forward(dense, x)()
    calls = max(1, round(SECONDS_PER_REPETITION / (time.perf_counter() - start)))
    functions = {"dense": _forward(dense, x), **{v: _forward(m, x) for v, m in purged.items()}}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    seconds = alternate_many(functions, calls, args.repetitions, clock)
    dense_flops = flops(dense, x)
    rows = []
    for variant, small in purged.items():
        speedups = [d / p for d, p in zip(seconds["dense"], seconds[variant])]
        ideal = dense_flops / flops(small, x)
        work, share = work_ideal(dense, small, x)
        measured = statistics.median(speedups)
        cells = [f"{realized[variant]:.3f}", kept[variant], f"{ideal:.2f}×"]
        cells += [f"{measured:.2f}× [{min(speedups):.2f}, {max(speedups):.2f}]", f"{measured / ideal:.2f}"]
        cells += [f"{share:.2f}", f"{work:.2f}×", f"{measured / work:.2f}"]
        rows.append([name, variant, *cells])
    dense_ms = 1e3 * statistics.median(seconds["dense"])
    print(f"  {name}: batch {case.batch}, dense forward {dense_ms:.1f} ms, {calls} calls per repetition, "
          f"{args.repetitions} repetitions", flush=True)  # fmt: skip
    return rows


HEADER = ["model", "variant", "realized density", "kept units per group", "FLOP ideal",
          "speed-up (median [min, max])", "fraction of ideal", "dense time in FLOP operators",
          "work ideal", "fraction of work ideal"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--fraction", type=float, default=0.4, help="open fraction of every group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (with --threads 1, on a machine other jobs load)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="time the dense and the purged models and the input in channels_last memory format",
    )
    parser.add_argument(
        "--fold-batchnorm",
        action="store_true",
        help="fold every BatchNorm into the convolution before it, in the dense and the purged models "
        "(torch.fx: models it can trace, such as ResNet-8; LeNet-5 has no BatchNorm and stays as it is)",
    )
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; valid models: {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    print("$ python " + shlex.join(sys.argv))
    layout = "channels_last" if args.channels_last else "contiguous (NCHW)"
    layout += ", BatchNorm folded" if args.fold_batchnorm else ""
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, {layout}", flush=True)
    rows = [row for name in names for row in benchmark(name, args)]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
