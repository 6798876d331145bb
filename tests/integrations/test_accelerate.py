"""Accelerate around the model and GDA's optimizer: the constraint lands, one step per window."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs

accelerate = pytest.importorskip("accelerate")


def test_accelerate_prepares_gda_and_steps_once_per_accumulation_window():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    net = cs.sparsify(net, example_input=torch.zeros(2, 12))
    x = torch.randn(256, 12, generator=torch.Generator().manual_seed(0))
    y = (x @ torch.randn(12, 3, generator=torch.Generator().manual_seed(7))).argmax(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    epochs, k = 6, 2
    gda = cs.GDA(cs.SparsityProblem(net, target_density=0.4), torch.optim.Adam(net.parameters(), lr=1e-2),
                 total_steps=epochs * len(loader) // k)  # fmt: skip
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=k)
    model, optimizer, batches = accelerator.prepare(net, gda.as_optimizer(), loader)
    for _ in range(epochs):
        for xb, yb in batches:
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(xb), yb)
                accelerator.backward(loss)
                gda.observe(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
    assert gda.steps == epochs * len(loader) // k and gda.decision is not None
    assert gda.summary().realized["model"] <= 0.4
    assert math.isfinite(gda.as_optimizer().last.loss)  # observed, so logged
