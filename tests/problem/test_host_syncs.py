"""A GDA step transfers to the host once: the single logging transfer (Performance issue).

``.item()``, ``.tolist()``, ``nonzero()``, ``.cpu()``, ``.numpy()`` and Python conversions
(``float(t)``, ``bool(t)``) of a tensor block until a GPU has finished; they are counted
here with a ``TorchFunctionMode``. Adam's per-parameter ``step`` counters are excluded:
torch keeps them on the host by design (``capturable=False``), so reading them never waits
for the device.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import ctrlsparse as cs

SYNCS = {"item", "tolist", "nonzero", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}


class CountSyncs(TorchFunctionMode):
    def __init__(self, host_tensors: set[int]) -> None:
        super().__init__()
        self.host_tensors, self.calls = host_tensors, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCS and not (args and id(args[0]) in self.host_tensors):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _adam_step_counters(*optimizers) -> set[int]:
    return {id(state["step"]) for opt in optimizers for state in opt.state.values() if "step" in state}


def _conv_net():
    conv_bn = [nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
    return nn.Sequential(*conv_bn, nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(288, 3))


LEVELS = [{"target_density": 0.5}, {"target_density": 0.5, "target_macs": 0.6}, {"penalty": 0.1}]


@pytest.mark.parametrize("levels", LEVELS, ids=["density", "density+macs", "penalized"])
def test_a_gda_step_makes_one_host_transfer(levels):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    model = cs.sparsify(_conv_net(), example_input=x[:2])
    problem = cs.SparsityProblem(model, F.cross_entropy, **levels)
    opt = cs.GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-3), total_steps=100)
    opt.step(x, y)  # optimizer states exist from here on
    for _ in range(3):
        with CountSyncs(_adam_step_counters(opt.primal_optimizer, opt.dual_optimizer)) as counter:
            opt.step(x, y)
        assert counter.calls == ["tolist"], counter.calls


def test_the_counter_sees_a_sync():
    with CountSyncs(set()) as counter:
        torch.ones(3).sum().item()
        float(torch.ones(()))
    assert counter.calls == ["item", "__float__"]
