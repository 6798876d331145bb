"""GPU tables of docs/performance.md: gated/dense training step, peak memory and purged
speed-up against the FLOP ideal, on ResNet-18 (CIFAR shape) and a Llama of about 1B parameters.

    .venv-dev/bin/python docs/scripts/gpu_tables.py                 # one GPU, under 8 minutes
    .venv-dev/bin/python docs/scripts/gpu_tables.py --compile-step  # adds GDA(compile="step")
    .venv-dev/bin/python docs/scripts/gpu_tables.py --smoke         # CPU, tiny sizes, end to end

Models (random weights, synthetic inputs; nothing is downloaded):

- ResNet-18, CIFAR shape (``ctrlsparse.models.cifar.resnet18``: 3×32×32, 10 classes), batch
  256, float32; ``sparsify(structure="neuron")``, one model-wise target ε = 0.5, the gated step
  ``GDA.step(x, y)``;
- Llama-3.2-1B's shape built from ``transformers.LlamaConfig`` (hidden 2048, 16 layers, 32
  query and 8 key-value heads, SwiGLU 8192, vocabulary 128256 tied to the embedding: 1.24B
  parameters), float32 weights under ``torch.autocast(dtype=torch.bfloat16)``, batch 8 × 1024
  tokens; ``sparsify`` gates its key-value heads (with their query heads) and SwiGLU units
  (``ctrlsparse.gating.decoders``), ε = 0.5, the gated step ``GDA.step(loss=model(...).loss)``.

Both steps use torch's fused Adam (``ctrlsparse.problem.kernels.adam``), lr 1e-4. They
alternate in one process (``ctrlsparse.experiments.bench.alternate_many``: the order rotates
every repetition, after warm-up rounds); every step ends with a device synchronisation (the
gated step has one anyway: its logging transfer), and the ratio is the median over the
repetitions, with min and max. Peak memory is the most one step allocates on top of what is
resident (``torch.cuda.max_memory_allocated``, ``bench.peak_memory``).

Purged speed-up: half of every gate group's units are opened (log α = 10, every other unit)
and the rest closed (log α = −10), the gated model is purged (``ctrlsparse.purge``, which checks
the purged outputs against the gated model's), and the eval forward (``torch.no_grad``) of
the purged model is timed against the dense model's, with the FLOP ideal: dense FLOPs / purged
FLOPs (``torch.utils.flop_counter``).

``--smoke`` runs the same code on the CPU at tiny sizes (ResNet-18 at batch 2, a Llama of
hidden 64 and 2 layers, 16 tokens): it checks that the script runs end to end, its numbers
mean nothing.
"""

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ctrlsparse import GDA, SparsityProblem, TargetSchedule, gate_groups, purge, sparsify
from ctrlsparse.experiments.bench import alternate_many, peak_memory, spread
from ctrlsparse.modelio import call_model
from ctrlsparse.models.cifar import resnet18
from ctrlsparse.problem.kernels import adam

LLAMA_1B = dict(
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=2048,
)  # fmt: skip
LLAMA_TINY = dict(
    hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=97, tie_word_embeddings=True, max_position_embeddings=64,
)  # fmt: skip


def synchronized(step, device: torch.device):
    """``step`` followed by a device synchronisation, so that a repetition's time is its work."""
    if device.type != "cuda":
        return step

    def run() -> None:
        step()
        torch.cuda.synchronize(device)

    return run


def half_open(model: torch.nn.Module) -> None:
    """Open every other unit of each gate group (log α = 10) and close the rest (−10)."""
    with torch.no_grad():
        for group in gate_groups(model):
            parameter = group.gate.parameter
            opened = torch.arange(parameter.shape[0], device=parameter.device) % 2 == 0
            parameter.copy_(torch.where(opened, 10.0, -10.0).view(-1, *[1] * (parameter.dim() - 1)))


def gda_for(gated: torch.nn.Module, loss_fn, compile) -> GDA:
    problem = SparsityProblem(gated, loss_fn, target_density=0.5)
    return GDA(
        problem,
        adam(gated.parameters(), lr=1e-4),
        schedule=TargetSchedule("fixed"),  # a moving level would change the gates being timed
        total_steps=100_000,
        feasibility=False,
        compile=compile,
    )


def resnet_steps(device, batch: int, compile) -> tuple[dict, torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    dense = resnet18(10).to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    gated = sparsify(copy.deepcopy(dense), example_input=x[:1])
    dense_opt = adam(dense.parameters(), lr=1e-4)

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        F.cross_entropy(dense(x), y).backward()
        dense_opt.step()

    steps = {"dense": dense_step}
    gda = gda_for(gated, F.cross_entropy, False)
    steps["gated"] = lambda: gda.step(x, y)
    if compile:
        compiled = gda_for(copy.deepcopy(gated), F.cross_entropy, "step")
        steps["gated, compile='step'"] = lambda: compiled.step(x, y)
    return steps, dense, gated, x


def llama_steps(device, batch: int, seq: int, config: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(**config, use_cache=False)).to(device)
    ids = torch.randint(0, config["vocab_size"], (batch, seq), device=device)
    gated = sparsify(copy.deepcopy(dense), example_input=ids[:1, :8])
    dense_opt = adam(dense.parameters(), lr=1e-4)
    bf16 = {"device_type": device.type, "dtype": torch.bfloat16}

    def dense_step() -> None:
        dense_opt.zero_grad(set_to_none=True)
        with torch.autocast(**bf16):
            loss = dense(input_ids=ids, labels=ids).loss
        loss.backward()
        dense_opt.step()

    def own_loss(gda: GDA, model: torch.nn.Module):
        def step() -> None:
            with torch.autocast(**bf16):
                loss = model(input_ids=ids, labels=ids).loss
            gda.step(loss=loss)

        return step

    # A loss of the user's own (autocast): compile="step" would leave this step eager.
    steps = {"dense": dense_step, "gated": own_loss(gda_for(gated, None, False), gated)}
    return steps, dense, gated, {"input_ids": ids}


def time_steps(name: str, steps: dict, device, n: int, repetitions: int) -> None:
    timed = {key: synchronized(step, device) for key, step in steps.items()}
    seconds = alternate_many(timed, n, repetitions)
    memory = {key: peak_memory(step) for key, step in timed.items()}
    print(f"\n{name}: {n} steps x {repetitions} repetitions")
    dense_ms = 1e3 * statistics.median(seconds["dense"])
    print(f"  dense: {dense_ms:.2f} ms per step, peak {memory['dense'] / 2**20:.1f} MiB")
    for key in [k for k in steps if k != "dense"]:
        ratios = [a / b for a, b in zip(seconds[key], seconds["dense"])]
        ms = 1e3 * statistics.median(seconds[key])
        peak = memory[key] / 2**20
        print(
            f"  {key} / dense: {spread(ratios)}; {ms:.2f} ms per step; peak {peak:.1f} MiB "
            f"({memory[key] / max(memory['dense'], 1):.2f}x dense)"
        )


def time_purged(name: str, dense, gated, example, device, n: int, repetitions: int, autocast: bool) -> None:
    half_open(gated)
    purged = purge(gated, example).to(device).eval()
    dense.eval()

    def forward(model):
        def run() -> None:
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                call_model(model, example)

        return synchronized(run, device)

    ideal = count_flops(dense, example) / count_flops(purged, example)
    seconds = alternate_many({"purged": forward(purged), "dense": forward(dense)}, n, repetitions)
    speed_ups = [d / p for p, d in zip(seconds["purged"], seconds["dense"])]
    measured = statistics.median(speed_ups)
    print(
        f"  {name} purged (half of each group's units open): speed-up {spread(speed_ups)}, "
        f"ideal {ideal:.2f}x (dense FLOPs / purged FLOPs), {measured / ideal:.0%} of the ideal; "
        f"eval forward {1e3 * statistics.median(seconds['purged']):.2f} ms vs "
        f"{1e3 * statistics.median(seconds['dense']):.2f} ms"
    )


def count_flops(model: torch.nn.Module, example) -> int:
    """FLOPs of one eval forward on ``example`` (a tensor or a dict of keyword arguments)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call_model(model, example)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks that the script runs")
    parser.add_argument("--compile-step", action="store_true", help="also time GDA(..., compile='step')")
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.smoke:
        device, resnet_batch, llama = torch.device("cpu"), 2, (2, 16, LLAMA_TINY)
        n, repetitions = 2, 2
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no GPU: run with --smoke to check the script on the CPU")
        device, resnet_batch, llama = torch.device("cuda"), 256, (8, 1024, LLAMA_1B)
        n, repetitions = 10, 15
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")

    steps, dense, gated, x = resnet_steps(device, resnet_batch, args.compile_step)
    time_steps(f"ResNet-18 (CIFAR shape), batch {resnet_batch}, float32", steps, device, n, repetitions)
    time_purged("ResNet-18", dense, gated, x, device, n, repetitions, autocast=False)
    del steps, dense, gated
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"  ({time.perf_counter() - start:.0f} s so far)")

    if not args.skip_llama:
        batch, seq, config = llama
        steps, dense, gated, ids = llama_steps(device, batch, seq, config)
        size = sum(p.numel() for p in dense.parameters()) / 1e6
        label = f"Llama ({size:,.1f}M parameters), batch {batch} x {seq} tokens, bf16 autocast"
        time_steps(label, steps, device, max(2, n // 2), max(5, repetitions // 2))
        time_purged(
            "Llama", dense, gated, ids, device, max(2, n // 2), max(5, repetitions // 2), autocast=True
        )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
