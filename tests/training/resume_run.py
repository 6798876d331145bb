"""A small run for the resume tests: ``python resume_run.py OUT MODE``.

MODE: ``full`` (uninterrupted), ``resume`` (continue OUT from its checkpoint), or a way to
die by SIGKILL: ``kill-step-N`` (at the N-th loss evaluation) or ``kill-write-N`` (halfway
through writing the N-th checkpoint file).
"""

import functools
import io
import os
import signal
import sys

import torch
import torch.nn.functional as F

from ctrlsparse import GDA, SparsityProblem, fit, mlp, sparsify
from ctrlsparse.data import Batches
from ctrlsparse.runs import checkpoint as checkpoints

EPOCHS, BATCH = 3, 16  # 96 samples: 6 steps per epoch, 18 in all


def noisy(x, generator):
    return x + 0.05 * torch.randn(x.shape, generator=generator)


def build():
    torch.manual_seed(0)
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    model = sparsify(mlp(input_size=6, hidden=(12,), num_classes=3), "paper")
    calls = {"n": 0}
    kill_step = int(MODE.rsplit("-", 1)[1]) if MODE.startswith("kill-step") else None

    def loss_fn(out, target):
        calls["n"] += 1
        if calls["n"] == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return F.cross_entropy(out, target)

    problem = SparsityProblem(model, loss_fn, target_density={"fc1": 0.5, "fc2": 0.6})
    primal = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(primal, step_size=1, gamma=0.5)
    transform = functools.partial(noisy, generator=torch.Generator().manual_seed(2))
    order = torch.Generator().manual_seed(3)
    train = Batches(x, y, BATCH, shuffle=True, generator=order, transform=transform)
    return GDA(problem, primal), train, Batches(x, y, 48), scheduler


def die_while_writing(nth):
    real_save, count = torch.save, {"n": 0}

    def save(obj, f):
        count["n"] += 1
        if count["n"] < nth:
            return real_save(obj, f)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.torch.save = save


if __name__ == "__main__":
    OUT, MODE = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    if MODE.startswith("kill-write"):
        die_while_writing(int(MODE.rsplit("-", 1)[1]))
    trainer, train, test, scheduler = build()
    fit(trainer, train, EPOCHS, test_batches=test, run_dir=OUT, config={"toy": 1}, progress=False,
        lr_scheduler=scheduler, checkpoint_every=4, resume=MODE == "resume")  # fmt: skip
