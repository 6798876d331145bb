"""ctrlsparse against Torch-Pruning's importance on a small Llama, at the same target shape.

One dense Llama (problems/python_docs_llama.toml's: hidden 128, 4 layers, 4 heads over 2
key-value heads, SwiGLU 344, BPE 4096 on Debian's python3-doc prose) is trained once
(seed 0). From it, for each seed:

- **ctrlsparse**: hard concrete gates on key-value heads, SwiGLU units and the hidden
  dimension (initial drop rate ``--drop-rate``), ``target_shape`` driven by the Lagrangian
  for ``--prune-steps`` steps on batches of their own (the last ``--feasibility`` share is
  the feasibility phase, gates decided), then ``to_pretrained`` and ``--steps`` steps of
  fine-tuning on Torch-Pruning's batches with a fresh Adam. With ``--prune-steps 0``,
  pruning and training share the ``--steps`` steps instead.
- **Torch-Pruning** (``torch_pruning``): its ``GroupMagnitudeImportance`` (p = 2) or
  ``GroupTaylorImportance`` scores the same units (each unit's slices of every projection
  form one ``torch_pruning`` group), the lowest-scored units of every group are cut at once
  to the same shape (the same purge), then the purged model is fine-tuned for ``--steps``
  steps with the same optimizer and the same batches. ``torch_pruning_total`` fine-tunes
  for ``--prune-steps`` + ``--steps``: as many training steps as ctrlsparse takes in all.
- **dense, continued** (``--methods dense``): the dense model trained ``--steps`` more
  steps on the same batches, the reference for the extra training the pruned models get.

Torch-Pruning's own ``MetaPruner`` did not return within 120 s on this 4-layer Llama
(transformers 5, torch-pruning 1.6.0; its group search walks the residual stream of every
layer), so only its importance criteria are used, on groups built from the decoder layout.

All runs use the next-token loss alone (no distillation). Reported: validation
perplexity (mean ± std over seeds), the realized shape and parameter count, and the
purged model's forward tokens/s against the dense one next to the MACs ideal.

    .venv-dev/bin/python docs/scripts/llm_vs_torch_pruning.py --dense-steps 1000 --steps 150 \
        --prune-steps 150 --seeds 0 1 2 --methods ctrlsparse torch_pruning torch_pruning_total \
        --drop-rate 0.1 --out docs/results/llm_vs_torch_pruning.json
    .venv-dev/bin/python docs/scripts/llm_vs_torch_pruning.py --dense-steps 300 --steps 150 \
        --seeds 0 1 2 --out docs/results/llm_vs_torch_pruning_300.json  # the first protocol
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch_pruning as tp
from torch_pruning._helpers import GroupItem
from torch_pruning.dependency import Dependency, Group, Node

import ctrlsparse as cs
from ctrlsparse.data.dataset import Batches
from ctrlsparse.data.text import load_text
from ctrlsparse.gating.decoders import decoder_layout, decoder_units
from ctrlsparse.models.hf import llama
from ctrlsparse.training.lm import distillation_loss, next_token_loss, perplexity

METHODS = ("ctrlsparse", "torch_pruning", "torch_pruning_total", "dense")
SHAPE = {"kv_heads": 1, "heads": 2, "intermediate": 172, "hidden": 96}
KIND_KEY = {"head": "kv_heads", "output": "intermediate", "hidden": "hidden"}


def _batches(data, batch_size: int, seed: int, steps: int):
    torch.manual_seed(seed)
    batches = Batches(*data.train, batch_size=batch_size, shuffle=True)
    while True:
        for x, y in batches:
            yield {"input_ids": x}, y
            steps -= 1
            if steps == 0:
                return


def _validation(data, batch_size: int = 64):
    x, y = data.test
    return [
        ({"input_ids": x[i : i + batch_size]}, y[i : i + batch_size]) for i in range(0, len(x), batch_size)
    ]


def _train(model, data, steps: int, lr: float, batch_size: int, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for x, y in _batches(data, batch_size, seed, steps):
        loss = next_token_loss(model(**x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _ctrlsparse(
    dense, data, steps: int, lr: float, batch_size: int, seed: int, drop_rate: float, feasibility: float,
    prune_steps: int, distill: float = 0.0,
):  # fmt: skip
    """With ``prune_steps``: the Lagrangian prunes for that many steps of batches of their own
    (the last ``feasibility`` share with decided gates), then the purged model fine-tunes for
    ``steps`` on Torch-Pruning's batches. Without: pruning and all training in ``steps``."""
    model = copy.deepcopy(dense)
    example = {"input_ids": data.train[0][:1]}
    cs.sparsify(model, example_input=example, hidden=True, drop_rate=drop_rate)
    problem = cs.SparsityProblem(model, next_token_loss, target_shape=SHAPE)
    adam = torch.optim.Adam(model.parameters(), lr=lr)
    length = prune_steps or steps
    opt = cs.GDA(problem, adam, total_steps=length, feasibility=feasibility)
    model.train()
    teacher = dense.eval()
    for x, y in _batches(data, batch_size, seed + 2000 if prune_steps else seed, length):
        if distill:  # the pruning phase's loss: part next-token loss, part KL from the dense model
            with torch.no_grad():
                soft = teacher(**x).logits
            opt.step(loss=distillation_loss(model(**x).logits, soft, y, weight=distill))
        else:
            opt.step(x, y)
    pruned = cs.to_pretrained(model)
    if prune_steps:
        _train(pruned, data, steps, lr, batch_size, seed)
    return pruned


def _tp_groups(model):
    """One torch_pruning Group per gate group of the decoder layout: the same units' slices."""
    layout = decoder_layout(model)
    modules = dict(model.named_modules())
    groups = []
    for unit in decoder_units(model, layout, hidden=True):
        group = Group()
        for s in unit.slices:
            module = modules[s.module]
            if s.param != "weight" or not isinstance(module, torch.nn.Linear):
                continue  # TP's importance reads Linear weights (embeddings and norms are skipped there too)
            handler = tp.prune_linear_out_channels if s.dim == 0 else tp.prune_linear_in_channels
            node = Node(module, None, s.module)
            item = GroupItem(Dependency(handler, handler, node, node), s.positions.tolist())
            item.root_idxs = s.units.tolist()
            group.add_dep(item.dep, item.idxs)
            group[len(group) - 1].root_idxs = item.root_idxs
        groups.append((unit, group))
    return groups


def _torch_pruning(dense, data, steps: int, lr: float, batch_size: int, seed: int, importance: str):
    model = copy.deepcopy(dense)
    if importance == "taylor":  # gradients of the loss on 8 training batches, as TP's LLM example does
        model.zero_grad()
        for x, y in _batches(data, batch_size, seed + 1000, 8):
            next_token_loss(model(**x), y).backward()
        scorer = tp.importance.GroupTaylorImportance()
    else:
        scorer = tp.importance.GroupMagnitudeImportance(p=2)
    scores = {(u.name, u.kind): scorer(g)[: u.num_units].detach() for u, g in _tp_groups(model)}
    model.zero_grad(set_to_none=True)
    example = {"input_ids": data.train[0][:1]}
    cs.sparsify(model, example_input=example, hidden=True, gates="mask")
    with torch.no_grad():
        for g in cs.gating.gate_groups(model):
            keep = SHAPE[KIND_KEY[g.kind]]
            mask = torch.zeros(g.num_units)
            mask[scores[(g.name, g.kind)].argsort(descending=True)[:keep]] = 1.0
            g.gate.mask.copy_(mask)
    pruned = cs.to_pretrained(model)
    _train(pruned, data, steps, lr, batch_size, seed)
    return pruned


def _macs_per_token(config, seq_len: int) -> float:
    """Linear MACs per token plus attention's QK^T and AV at mean causal length (seq_len + 1) / 2."""
    d, h, kv, hd = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
    linear = d * hd * (h + 2 * kv) + h * hd * d + 3 * d * config.intermediate_size
    attention = 2 * h * hd * (seq_len + 1) / 2
    return config.num_hidden_layers * (linear + attention) + d * config.vocab_size


@torch.no_grad()
def _tokens_per_second(models: dict, data, reps: int = 7, batch: int = 16) -> dict:
    """Forward tokens/s of each model, repetitions alternating between models."""
    x = data.test[0][:batch]
    times = {name: [] for name in models}
    for m in models.values():
        m.eval()(input_ids=x)  # warm-up
    for _ in range(reps):
        for name, m in models.items():
            start = time.perf_counter()
            m(input_ids=x)
            times[name].append(x.numel() / (time.perf_counter() - start))
    return times


def _speed(result: dict, dense, purged: dict, data) -> None:
    """Tokens/s of the dense and purged models, and the MACs-per-token ideal of their ratio."""
    speed = _tokens_per_second({"dense": dense, **purged}, data)
    ideal = _macs_per_token(dense.config, 128) / _macs_per_token(purged["ctrlsparse"].config, 128)
    result["tokens_per_second"] = speed
    result["macs_ideal_speedup"] = ideal
    for name, ts in speed.items():
        print(f"{name}: {statistics.median(ts):.0f} tokens/s [{min(ts):.0f}, {max(ts):.0f}]")
    ratios = [p / d for p, d in zip(speed["ctrlsparse"], speed["dense"])]
    print(
        f"purged / dense tokens/s: {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]; "
        f"MACs ideal {ideal:.2f}"
    )


def _shape(model) -> dict:
    c = model.config
    return {
        "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "intermediate": c.intermediate_size,
        "hidden": c.hidden_size,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dense-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200, help="pruning + fine-tuning steps of each method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--importance", choices=("magnitude", "taylor"), default="taylor")
    parser.add_argument("--drop-rate", type=float, default=0.5, help="ctrlsparse's initial drop rate")
    parser.add_argument("--feasibility", type=float, default=0.1, help="ctrlsparse's fixed-gate share")
    parser.add_argument(
        "--prune-steps", type=int, default=0,
        help="ctrlsparse prunes for this many steps, then fine-tunes --steps as Torch-Pruning does "
        "(0: pruning and fine-tuning share --steps)",
    )  # fmt: skip
    parser.add_argument(
        "--distill", type=float, default=0.0,
        help="ctrlsparse's pruning loss: this weight of KL from the dense model (T = 2), the rest next-token",
    )  # fmt: skip
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["ctrlsparse", "torch_pruning"])
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--dense-cache",
        default=None,
        help="file to keep the trained dense model in (trained once, then loaded)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = load_text("python_docs", seq_len=128, tokenizer="bpe", vocab_size=4096)
    validation = _validation(data)
    torch.manual_seed(0)
    dense = llama((128,), data.num_classes, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=344)
    start = time.time()
    if args.dense_cache and os.path.exists(args.dense_cache):
        saved = torch.load(args.dense_cache)
        if saved["dense_steps"] != args.dense_steps or saved["batch_size"] != args.batch_size:
            raise SystemExit(
                f"{args.dense_cache} holds a dense model of other settings: delete it or pass another"
            )
        dense.load_state_dict(saved["state"])
    else:
        _train(dense, data, args.dense_steps, 2e-3, args.batch_size, seed=0)
        if args.dense_cache:
            state = {
                "dense_steps": args.dense_steps,
                "batch_size": args.batch_size,
                "state": dense.state_dict(),
            }
            torch.save(state, args.dense_cache)
    result = {
        "args": vars(args),
        "shape": SHAPE,
        "dense": {"ppl": perplexity(dense, validation), **_shape(dense)},
    }
    print(f"dense: ppl {result['dense']['ppl']:.2f} ({time.time() - start:.0f} s)", flush=True)
    runs = {method: [] for method in args.methods}
    purged = {}
    for seed in args.seeds:
        for method in runs:
            start = time.time()
            torch.manual_seed(seed)
            if method == "ctrlsparse":
                model = _ctrlsparse(
                    dense, data, args.steps, 1e-3, args.batch_size, seed, args.drop_rate, args.feasibility,
                    args.prune_steps, args.distill,
                )  # fmt: skip
            elif method.startswith("torch_pruning"):  # _total: as many training steps as ctrlsparse
                steps = args.steps + (args.prune_steps if method == "torch_pruning_total" else 0)
                model = _torch_pruning(dense, data, steps, 1e-3, args.batch_size, seed, args.importance)
            else:
                model = copy.deepcopy(dense)
                _train(model, data, args.steps, 1e-3, args.batch_size, seed)
            run = {"seed": seed, "ppl": perplexity(model, validation), **_shape(model)}
            runs[method].append(run)
            if method in ("ctrlsparse", "torch_pruning"):
                purged[method] = model
            print(f"{method} seed {seed}: {run} ({time.time() - start:.0f} s)", flush=True)
    result["runs"] = runs
    for method, rs in runs.items():
        ppl = [r["ppl"] for r in rs]
        print(
            f"{method}: ppl {statistics.mean(ppl):.2f} ± {statistics.pstdev(ppl):.2f} over {len(ppl)} seeds"
        )
    if "ctrlsparse" in purged:
        _speed(result, dense, purged, data)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
