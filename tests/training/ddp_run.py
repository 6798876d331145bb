"""Runs for the multi-process tests: ``python ddp_run.py OUT WORLD MODE`` spawns WORLD gloo ranks.

Each rank writes ``OUT/rank{r}.json`` ({"error": message} or {"ok": true}) and, for the
``steps`` mode, ``OUT/rank{r}.pt`` (final parameters and multipliers).

MODE: ``steps`` (20 GDA steps on deterministic gates, no fit), ``fit``, ``fit-stop-K`` (every
rank raises at its K-th loss evaluation), ``resume``, ``perturb-gate`` / ``perturb-multiplier``
(rank 1 alone changes one value at its 5th step).
"""

import gc
import json
from pathlib import Path

import torch
import torch.distributed as dist

# ctrlsparse is imported by the ranks alone: the launching process stays light.


def build(rank, mode):
    import torch.nn.functional as F

    from ctrlsparse import GDA, SparsityProblem, mlp, sparsify
    from ctrlsparse.data import Batches
    from ctrlsparse.problem.schedules import TargetSchedule

    torch.manual_seed(0)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    model = sparsify(mlp(input_size=6, hidden=(12,), num_classes=3), "paper")
    calls = {"n": 0}

    def loss_fn(out, target):
        calls["n"] += 1
        if mode.startswith("fit-stop") and calls["n"] == int(mode.rsplit("-", 1)[1]):
            raise KeyboardInterrupt  # as if the job were stopped
        if mode.startswith("perturb") and rank == 1 and calls["n"] == 5:
            with torch.no_grad():
                if mode == "perturb-gate":
                    problem.groups[0].gate.parameter[0] += 0.5
                else:
                    problem.multiplier("fc1").add_(0.5)
        return F.cross_entropy(out, target)

    targets = {"fc1": 0.2, "fc2": 0.3} if mode == "steps" else {"fc1": 0.5, "fc2": 0.6}
    problem = SparsityProblem(model, loss_fn, target_density=targets)
    primal = torch.optim.Adam(model.parameters(), lr=1e-2)
    kwargs = {"dual_optimizer": "sgd", "dual_lr": 0.5, "schedule": TargetSchedule("fixed")}
    kwargs.update(feasibility=False, dual_restarts=False)
    if mode == "steps":
        gda = GDA(problem, primal, **kwargs)
    else:  # without restarts a perturbed multiplier stays perturbed
        gda = GDA(problem, primal, dual_restarts=not mode.startswith("perturb"))
    train = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(3))
    return gda, train, Batches(x, y, 48)


def worker(rank, world, port, out, mode):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    result = run(rank, world, out, mode)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    # Every model, DDP wrapper and traceback is gone by now. Leave together: a rank that tears
    # down gloo while the other still talks to it aborts ("terminate called ...", SIGABRT).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def run(rank, world, out, mode):
    from ctrlsparse import fit
    from ctrlsparse.training import distributed

    torch.manual_seed(100 + rank)  # the gate noise differs per rank (seed + rank)
    result = {"ok": True}
    try:
        gda, train, test = build(rank, mode)
        if mode == "steps":
            gda.begin(20, 6)
            distributed.wrap(gda)
            train.shard(rank, world)
            gda.model.eval()  # deterministic gates (eq. 13): 2 x half batch == 1 x full batch
            done = 0
            while done < 20:
                for x, y in train:
                    if done < 20:
                        gda.step(x, y)
                        done += 1
            state = {k: v.detach().clone() for k, v in gda.model.state_dict().items()}
            state.update({f"lambda/{n}": value.clone()
                          for n, value in gda.problem.multiplier_values().items()})  # fmt: skip
            torch.save(state, Path(out) / f"rank{rank}.pt")
        else:
            fit(gda, train, 3, test_batches=test, run_dir=Path(out) / "run", config={"toy": 1},
                progress=False, checkpoint_every=4, resume=mode == "resume")  # fmt: skip
            # "fit" into a used directory: rank 0 refuses, and every rank must stop
    except BaseException as error:  # noqa: BLE001 - reported to the test
        result = {"error": f"{type(error).__name__}: {error}"}
    return result


if __name__ == "__main__":
    from spawn import main  # this script's folder is on sys.path when it runs

    main(worker)
