"""Runs for the FSDP2 tests: ``python fsdp_run.py OUT WORLD MODE`` spawns WORLD gloo ranks.

A small residual stack (an input layer, two blocks, a head), each block and the root
``fully_shard``-ed with the gates left whole, trained 40 steps with ``GDA.step(loss=...)``.
The gate noise is seeded per rank and step, so a resumed run draws what the uninterrupted
one drew. Each rank writes ``OUT/rank{r}.pt`` (gates, multipliers, realized density,
decision) or ``OUT/rank{r}.err``.

MODE: ``train``, ``resume`` (stop at step 25, save with DCP, rebuild everything, load,
finish), ``shard-gates`` (fully_shard without ignored_params: must be refused), ``llama``
(a tiny Llama computing its own next-token loss, ``fully_shard`` per decoder layer).
"""

import traceback
from pathlib import Path

import torch
import torch.distributed as dist

STEPS, STOP = 40, 25


def build(shard_gates=False):
    import torch.nn.functional as F
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    import ctrlsparse as cs
    from ctrlsparse.problem.sharding import gate_parameters

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            return x + self.down(F.relu(self.up(x)))

    class Net(nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.inp, self.head = nn.Linear(12, d), nn.Linear(d, 3)
            self.blocks = nn.ModuleList([Block(d) for _ in range(2)])

        def forward(self, x):
            x = self.inp(x)
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    torch.manual_seed(0)
    net = cs.sparsify(Net(), example_input=torch.zeros(2, 12))
    problem = cs.SparsityProblem(net, target_density=0.4)  # before fully_shard: it reads the shapes
    if dist.get_world_size() > 1:
        ignored = None if shard_gates else gate_parameters(net)
        for block in net.blocks:
            fully_shard(block, ignored_params=ignored)
        fully_shard(net, ignored_params=ignored)
    return cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=1e-2, foreach=False), total_steps=STEPS)


def build_llama():
    import transformers as tf
    from torch.distributed.fsdp import fully_shard

    import ctrlsparse as cs
    from ctrlsparse.problem.sharding import gate_parameters

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=172, use_cache=False)  # fmt: skip
    model = cs.sparsify(tf.LlamaForCausalLM(config), hidden=True)
    problem = cs.SparsityProblem(model, target_density=0.5)
    gates = gate_parameters(model)
    for layer in model.model.layers:
        fully_shard(layer, ignored_params=gates)
    fully_shard(model, ignored_params=gates)
    return cs.GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-2, foreach=False), total_steps=STEPS)


def train_llama(gda, rank, world):
    ids = torch.randint(3, 97, (32, 12), generator=torch.Generator().manual_seed(5))
    for step in range(STEPS):
        torch.manual_seed(1000 * rank + step)
        batch = ids[step % 4 * 8 : step % 4 * 8 + 8][rank::world]
        gda.step(loss=gda.model(input_ids=batch, labels=batch).loss)


def train(gda, start, stop, rank, world):
    import torch.nn.functional as F

    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    y = (x @ torch.randn(12, 3, generator=torch.Generator().manual_seed(7))).argmax(1)
    for step in range(start, stop):
        torch.manual_seed(1000 * rank + step)  # the gate noise of this rank and step
        part = slice(step % 4 * 16, step % 4 * 16 + 16)
        xb, yb = x[part][rank::world], y[part][rank::world]
        gda.step(loss=F.cross_entropy(gda.model(xb), yb))


def worker(rank, world, port, out, mode):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from ctrlsparse.training import sharded

        gda = build_llama() if mode == "llama" else build(shard_gates=mode == "shard-gates")
        if mode == "llama":
            train_llama(gda, rank, world)
        elif mode == "resume":
            train(gda, 0, STOP, rank, world)
            sharded.save(gda, Path(out) / "ckpt")
            gda = build()
            sharded.load(gda, Path(out) / "ckpt")
            train(gda, STOP, STEPS, rank, world)
        else:
            train(gda, 0, STEPS, rank, world)
        summary = gda.summary()
        torch.save({"gates": torch.cat([g.gate.parameter.detach().reshape(-1) for g in gda.problem.groups]),
                    "multipliers": {k: v.clone() for k, v in gda.problem.multiplier_values().items()},
                    "realized": summary.realized["model"], "decision": gda.decision.to_dict(),
                    "unit_share": gda.problem.unit_share("model"), "steps": gda.steps},
                   Path(out) / f"rank{rank}.pt")  # fmt: skip
    except Exception:  # noqa: BLE001 - reported to the test
        (Path(out) / f"rank{rank}.err").write_text(traceback.format_exc())
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    from spawn import main  # this script's folder is on sys.path when it runs

    main(worker)
