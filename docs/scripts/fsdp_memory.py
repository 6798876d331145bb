"""Peak memory per rank of a gated model trained with FSDP2 (``fully_shard``), 1 rank against 2.

    python docs/scripts/fsdp_memory.py --blocks 8 --width 512 --steps 5

Spawns WORLD gloo ranks on the CPU for WORLD = 1 and 2. Each builds a residual stack of
``--blocks`` MLP blocks (``width → 4·width → width``), sparsifies it, builds the problem,
shards every block and the root with the gates left whole (``ignored_params``), and takes
``--steps`` GDA steps with Adam. It prints, per rank:

- the training state it holds: the bytes of its weights, gradients and Adam moments (a
  rank's own shard of each sharded tensor, the gates whole);
- the resident memory above its baseline after importing torch and ctrlsparse, the
  largest read after a training step (``VmRSS``), and the peak of the whole process
  (``ru_maxrss``). Both include what the allocator keeps of the unsharded model that every
  rank builds before ``fully_shard`` (``sparsify`` traces it whole).
"""

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _local_bytes(tensor) -> int:
    if not isinstance(tensor, torch.Tensor):
        return 0
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def worker(rank, world, port, out, blocks, width, steps):
    torch.set_num_threads(1)
    import torch.nn.functional as F
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    import ctrlsparse as cs
    from ctrlsparse.problem.sharding import gate_parameters

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    base = _now_mib()

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x):
            return x + self.down(F.relu(self.up(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(blocks)])
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    torch.manual_seed(0)
    net = cs.sparsify(Net(), example_input=torch.zeros(2, width))
    params = sum(p.numel() for p in net.parameters())
    problem = cs.SparsityProblem(net, target_density=0.5)
    gates = gate_parameters(net)
    for block in net.blocks:
        fully_shard(block, ignored_params=gates)
    fully_shard(net, ignored_params=gates)
    gda = cs.GDA(problem, torch.optim.Adam(net.parameters(), lr=1e-3), total_steps=steps)
    x, y = torch.randn(32, width), torch.randint(0, 10, (32,))
    training = 0.0
    for _ in range(steps):
        gda.step(loss=F.cross_entropy(net(x[rank::world]), y[rank::world]))
        training = max(training, _now_mib() - base)
    state = sum(_local_bytes(p) + _local_bytes(p.grad) for p in net.parameters())
    state += sum(_local_bytes(t) for st in gda.primal_optimizer.state.values() for t in st.values())
    result = {"state_mib": state / 2**20, "training_mib": training, "peak_mib": _peak_mib() - base,
              "params": params}  # fmt: skip
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for world in (1, 2):
        with tempfile.TemporaryDirectory() as out, socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            mp.spawn(worker, args=(world, port, out, args.blocks, args.width, args.steps), nprocs=world)
            rows[world] = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    params = rows[1][0]["params"]
    print(f"{params:,} parameters (weights and gates), {args.blocks} blocks of width {args.width}")
    print("world | training state MiB per rank | ratio to 1 rank | RSS after a step MiB | process peak MiB")
    one = rows[1][0]["state_mib"]
    for world, ranks in rows.items():
        state = [r["state_mib"] for r in ranks]
        cells = [
            ", ".join(f"{r[key]:.0f}" for r in ranks) for key in ("state_mib", "training_mib", "peak_mib")
        ]
        print(f"{world} | {cells[0]} | {max(state) / one:.2f} | {cells[1]} | {cells[2]}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
