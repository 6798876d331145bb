"""Each convolution of a purged model against the same convolution of the dense model: time and FLOP rate.

    .venv-dev/bin/python docs/scripts/conv_rates.py --variants "r=1,r=8,pad 8" --channels-last

The models, gates and purged variants are purge_round.py's (same ``--seed`` and ``--fraction``:
random weights, hand-set gates, the feasibility phase's decision, ``cs.purge``). One eval
forward of each model records every ``nn.Conv2d``'s input (forward hooks); then each
convolution runs alone on its recorded input, the dense layer and the purged variants' layers of
the same name alternating in one process (``alternate_many``, rotated order, median of
``--repetitions``). Per layer it prints the channels in and out, the time, the FLOP rate
(GFLOP/s) and, for each variant, dense time / purged time against dense FLOPs / purged FLOPs.
The last row adds up the convolutions alone: how far the convolution kernels by themselves
stay from the FLOP ideal, before pooling, BatchNorm, activations and adds.

A benchmark, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import purge_round  # noqa: E402  (the models and variants of the purge table)

from ctrlsparse.experiments.bench import alternate_many  # noqa: E402


def _conv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Conv2d, torch.Tensor]]:
    """Every Conv2d of ``model`` by name, with the input it saw in one eval forward of ``x``."""
    seen, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hook = module.register_forward_hook(
                lambda m, args, out, name=name: seen.__setitem__(name, (m, args[0]))
            )
            hooks.append(hook)
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def _conv_flops(conv: nn.Conv2d, x: torch.Tensor) -> float:
    with torch.no_grad():
        out = conv(x)
    per_output = 2 * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return float(out.numel() * per_output)


def _call(conv: nn.Conv2d, x: torch.Tensor, calls: int) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            for _ in range(calls):
                conv(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion_resnet", choices=list(purge_round.CASES))
    parser.add_argument("--variants", default=",".join(purge_round.VARIANTS),
                        help=f"comma-separated, of {', '.join(purge_round.VARIANTS)}")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=15)
    parser.add_argument("--fraction", type=float, default=0.4, help="open fraction of every group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in purge_round.VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; valid variants: {', '.join(purge_round.VARIANTS)}")
    torch.set_num_threads(args.threads)
    print("$ python " + shlex.join(sys.argv))
    layout = "channels_last" if args.channels_last else "contiguous (NCHW)"
    print(f"torch {torch.__version__}, {args.threads} threads, {layout}", flush=True)
    dense, purged, _, kept, x = purge_round.build(args.model, args.fraction, args.seed)
    models = {"dense": dense, **{v: purged[v] for v in variants}}
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    inputs = {k: _conv_inputs(m, x) for k, m in models.items()}
    names = list(inputs["dense"])
    functions, flops = {}, {}
    for key, layers in inputs.items():
        for name in names:
            conv, conv_x = layers[name]
            flops[key, name] = _conv_flops(conv, conv_x)
            functions[key, name] = (conv, conv_x)
    start = time.perf_counter()
    _call(*functions["dense", names[0]], 1)()
    calls = max(1, round(0.02 / (time.perf_counter() - start)))
    timed = {f"{k}|{n}": _call(conv, conv_x, calls) for (k, n), (conv, conv_x) in functions.items()}
    seconds = alternate_many(timed, 1, args.repetitions, time.process_time)
    median = {tuple(key.split("|")): statistics.median(s) / calls for key, s in seconds.items()}
    for v in variants:
        print(f"{v}: kept units per group {kept[v]}")
    header = ["layer", "dense in→out", "dense ms", "dense GFLOP/s"]
    for v in variants:
        header += [f"{v} in→out", f"{v} ms", f"{v} GFLOP/s", f"{v} time ratio / FLOP ratio"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in [*names, "all convolutions"]:
        layer_names = names if name == "all convolutions" else [name]
        dense_s = sum(median["dense", n] for n in layer_names)
        dense_f = sum(flops["dense", n] for n in layer_names)
        conv = functions["dense", names[0]][0] if name == "all convolutions" else functions["dense", name][0]
        cells = [name, "" if name == "all convolutions" else f"{conv.in_channels}→{conv.out_channels}"]
        cells += [f"{1e3 * dense_s:.2f}", f"{dense_f / dense_s / 1e9:.0f}"]
        for v in variants:
            s = sum(median[v, n] for n in layer_names)
            f = sum(flops[v, n] for n in layer_names)
            small = functions[v, layer_names[0]][0]
            cells += ["" if name == "all convolutions" else f"{small.in_channels}→{small.out_channels}"]
            cells += [f"{1e3 * s:.2f}", f"{f / s / 1e9:.0f}", f"{dense_s / s:.2f}× / {dense_f / f:.2f}×"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
