"""GDA inside the user's own loop: ``step(loss=...)``, ``backward``/``step`` with gradient
accumulation, autocast, clipping, an LR scheduler, and a model that computes its own loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs
from ctrlsparse.errors import NonFiniteLossError


def _data(n=256, seed=0):
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))
    teacher = torch.randn(12, 3, generator=torch.Generator().manual_seed(7))
    return x, (x @ teacher).argmax(1)


class OwnLoss(nn.Module):
    """A model that computes its own loss: ``forward(x, labels=None) -> (logits, loss)``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 24), nn.Linear(24, 16), nn.Linear(16, 3)

    def forward(self, x, labels=None):
        logits = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
        return logits, None if labels is None else F.cross_entropy(logits, labels)


def _gated(seed=0):
    torch.manual_seed(seed)
    return cs.sparsify(OwnLoss(), example_input=torch.zeros(2, 12))


def _problem(model, **levels):
    return cs.SparsityProblem(model, **(levels or {"target_density": 0.4}))


def test_a_model_returning_logits_and_none_traces_and_gets_gates():
    model = _gated()
    assert [g.name for g in cs.gate_groups(model)]  # units were found despite loss=None


def test_step_with_the_users_loss_follows_fit_on_the_same_batches():
    """k = 1: a plain loop with ``step(loss=...)`` is fit's run (same batches, same gate noise,
    same ramp, feasibility decision and multipliers), up to float rounding of two backward passes."""
    x, y = _data()
    epochs, batch = 4, 32
    steps = epochs * (len(x) // batch)

    model = _gated()
    fitted = cs.GDA(cs.SparsityProblem(model, lambda out, t: F.cross_entropy(out[0], t), target_density=0.4))
    torch.manual_seed(1)
    summary = cs.fit(fitted, cs.Batches(x, y, batch), epochs=epochs, progress=False)

    own = _gated()
    opt = cs.GDA(_problem(own), total_steps=steps)
    torch.manual_seed(1)
    records = []
    for _ in range(epochs):
        for xb, yb in cs.Batches(x, y, batch):
            _, loss = own(xb, labels=yb)
            records.append(opt.step(loss=loss))
    assert opt.decision is not None and opt.decision.step == fitted.decision.step
    assert records[-1].multipliers == pytest.approx(summary.multipliers, rel=1e-4, abs=1e-6)
    for a, b in zip(model.parameters(), own.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert opt.summary().realized_density == summary.realized_density <= 0.4


def test_gradient_accumulation_updates_once_per_k_micro_batches():
    model = _gated()
    opt = cs.GDA(_problem(model), torch.optim.Adam(model.parameters(), lr=1e-2), total_steps=30)
    x, y = _data(64)
    weights = [p.detach().clone() for p in model.parameters()]
    multipliers = opt.problem.multiplier_values()["model"].clone()
    losses = []
    for i in range(3):  # k = 3 micro-batches of 8
        _, loss = model(x[8 * i : 8 * i + 8], labels=y[8 * i : 8 * i + 8])
        opt.backward(loss / 3)
        losses.append(loss.item() / 3)
        assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # no update yet
    step = opt.step()
    assert opt.steps == 1 and step.loss == pytest.approx(sum(losses), rel=1e-6)  # the logged mean
    assert not all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next window
    assert opt.problem.multiplier_values()["model"] != multipliers or step.violations["model"] <= 0


def test_accumulated_gradient_is_the_sum_of_the_micro_batches():
    """With the gates' noise out of the way (eval mode: deterministic gates), k micro-batches of
    loss / k give the gradient of the whole batch's loss."""
    x, y = _data(16)
    grads = []
    for k in (1, 4):
        model = _gated()
        model.eval()
        opt = cs.GDA(_problem(model, penalty=0.0), torch.optim.SGD(model.parameters(), lr=0.0), total_steps=5)
        for i in range(k):
            part = slice(16 // k * i, 16 // k * (i + 1))
            opt.backward(model(x[part], labels=y[part])[1] / k)
        grads.append(model.fc1.parametrizations.weight.original.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_under_bf16_autocast_the_constraint_stays_float32_and_lands():
    model = _gated()
    opt = cs.GDA(_problem(model, target_density=0.5), torch.optim.Adam(model.parameters(), lr=1e-2),
                 total_steps=120)  # fmt: skip
    x, y = _data()
    for i in range(120):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(x[i % 8 * 32 : i % 8 * 32 + 32], labels=y[i % 8 * 32 : i % 8 * 32 + 32])
        step = opt.step(loss=loss)
        state = opt.problem.last_state
        assert all(s.violation.dtype == torch.float32 for s in state.observed_constraints.values())
    assert opt.problem.multiplier_values()["model"].dtype == torch.float32
    assert step.density == pytest.approx(opt.problem.expected_densities()[0].item(), abs=0.05)
    assert opt.summary().realized_density <= 0.5


def test_clipping_between_backward_and_step_bounds_the_loss_gradient_only():
    x, y = _data(32)
    moved = {}
    for clip in (None, 1e-8):
        model = _gated()
        opt = cs.GDA(_problem(model), torch.optim.SGD(model.parameters(), lr=0.5), total_steps=10)
        before = model.fc1.parametrizations.weight.original.detach().clone()
        gates = [g.gate.parameter.detach().clone() for g in opt.problem.groups]
        opt.backward(model(x, labels=y)[1])
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        moved[clip] = (model.fc1.parametrizations.weight.original - before).abs().max().item()
        gates_moved = max(
            (g.gate.parameter - b).abs().max().item() for g, b in zip(opt.problem.groups, gates)
        )
    assert moved[1e-8] < 1e-8 < moved[None]
    assert gates_moved > 0  # the constraint's pull on the gates is added after clipping


def test_an_lr_scheduler_built_after_gda_schedules_the_gates_group_too():
    model = _gated()
    primal = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = cs.GDA(_problem(model), primal, total_steps=10)  # the gates now have their own group
    scheduler = torch.optim.lr_scheduler.LambdaLR(primal, lambda step: 0.5**step)
    start = [group["lr"] for group in primal.param_groups]
    x, y = _data(32)
    for _ in range(2):
        opt.step(loss=model(x, labels=y)[1])
        scheduler.step()
    assert len(start) == 2 and [g["lr"] for g in primal.param_groups] == pytest.approx(
        [lr / 4 for lr in start]
    )


def test_a_model_computing_its_own_loss_needs_no_loss_fn():
    """``loss_fn=None`` and ``step(inputs)``: the loss is the output's ``loss``."""

    class Output(dict):
        __getattr__ = dict.get

    class HFStyle(OwnLoss):
        def forward(self, x, labels=None):
            logits, loss = super().forward(x, labels)
            return Output(logits=logits, **({"loss": loss} if loss is not None else {}))

    torch.manual_seed(0)
    model = cs.sparsify(HFStyle(), example_input=torch.zeros(2, 12))
    opt = cs.GDA(_problem(model), total_steps=5)
    x, y = _data(32)
    step = opt.step({"x": x, "labels": y})
    assert step.loss == pytest.approx(F.cross_entropy(model(x)["logits"], y).item(), abs=0.5)
    with pytest.raises(ValueError, match="no loss_fn and the model's output .* carries no loss"):
        opt.step({"x": x})


@pytest.mark.parametrize(
    ("make_loss", "message"),
    [
        (lambda model, x, y: model(x, labels=y)[1].detach(), "has no autograd graph"),
        (lambda model, x, y: F.cross_entropy(nn.Linear(12, 3)(x), y), "no gate received a gradient"),
        (lambda model, x, y: F.cross_entropy(model(x)[0], y, reduction="none"), r"scalar tensor .*\(32,\)"),
        (lambda model, x, y: 1.5, "scalar tensor .*float"),
    ],
)
def test_a_loss_that_cannot_drive_the_gates_is_refused_before_any_update(make_loss, message):
    model = _gated()
    opt = cs.GDA(_problem(model), total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data(32)
    with pytest.raises(ValueError, match=message):
        opt.step(loss=make_loss(model, x, y))
    assert opt.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_step_needs_a_minibatch_or_a_loss_not_both_nor_neither():
    model = _gated()
    opt = cs.GDA(_problem(model), total_steps=10)
    x, y = _data(8)
    with pytest.raises(ValueError, match=r"needs a minibatch, step\(inputs, targets\), or a loss"):
        opt.step()
    with pytest.raises(ValueError, match="not both"):
        opt.step({"x": x, "labels": y}, loss=model(x, labels=y)[1])


def test_a_non_finite_loss_stops_before_any_update():
    model = _gated()
    opt = cs.GDA(_problem(model), total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data(8)
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 1"):
        opt.step(loss=model(x, labels=y)[1] * float("nan"))
    assert opt.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_first_loss_is_checked_even_over_gradients_left_from_before():
    """Gates that already hold a gradient (a backward pass before GDA's first step) do not hide
    a loss that reaches the gates, nor one that does not."""
    model = _gated()
    x, y = _data(8)
    model(x, labels=y)[1].backward()  # leaves gradients in place
    opt = cs.GDA(_problem(model), total_steps=10)
    opt.step(loss=model(x, labels=y)[1])  # accumulates into the existing .grad: accepted
    assert opt.steps == 1
    other = _gated()
    other(x, labels=y)[1].backward()
    refused = cs.GDA(_problem(other), total_steps=10)
    with pytest.raises(ValueError, match="no gate received a gradient"):
        refused.backward(F.cross_entropy(nn.Linear(12, 3)(x), y))
