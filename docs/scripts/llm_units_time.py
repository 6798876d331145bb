"""docs/llm.md: the time ``cs.sparsify`` takes to find and gate the units of a decoder LM.

    .venv-dev/bin/python docs/scripts/llm_units_time.py

Builds a 12-layer, hidden-768 Llama (12 heads over 4 key-value heads, SwiGLU 2048,
vocabulary 32000; random weights, nothing downloaded), sparsifies it with heads, MLP
neurons, the hidden dimension and layer gates, and prints the time of ``sparsify`` and of one purge
(median [min, max] over REPS fresh models), with the units found.
"""

import statistics
import time

import torch
import transformers

import ctrlsparse as cs

REPS = 3


def _llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=4, intermediate_size=2048, use_cache=False,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def _summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s [{min(times):.2f}, {max(times):.2f}]"


def main() -> None:
    torch.manual_seed(0)
    ids = {"input_ids": torch.randint(0, 32000, (1, 16))}
    sparsify_times, purge_times = [], []
    for _ in range(REPS):
        model = _llama()
        start = time.perf_counter()
        cs.sparsify(model, example_input=ids, hidden=True, layers=True)
        sparsify_times.append(time.perf_counter() - start)
        for group in cs.gate_groups(model):  # close about a third of every kind of unit
            with torch.no_grad():
                group.gate.parameter.copy_(3 * torch.randn(group.gate.parameter.shape))
        start = time.perf_counter()
        cs.purge(model, ids)
        purge_times.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in _llama().parameters())
    kinds: dict[str, int] = {}
    for group in cs.gate_groups(model):
        kinds[group.kind] = kinds.get(group.kind, 0) + group.num_units
    threads = torch.get_num_threads()
    print(f"Llama, 12 layers, hidden 768, {parameters / 1e6:.1f} M parameters, torch threads {threads}")
    print(f"units: {kinds} in {len(cs.gate_groups(model))} gate groups")
    print(f"sparsify: {_summary(sparsify_times)} (median [min, max] of {REPS})")
    print(f"purge (with its exactness check on one example): {_summary(purge_times)}")


if __name__ == "__main__":
    main()
