"""Sparsify your own model: a density target, your own training loop, then purge.

    .venv/bin/python examples/sparsify_your_model.py

A small CNN with BatchNorm (any nn.Module works) learns 8x8 digits under the
constraint "at most 40% of the parameters active". A channel closes its filter, its
BatchNorm entries and its 64 columns of the Linear layer, so both layers share the
channels' density (per-layer targets on them would be coupled); the
trained model is then purged into a smaller plain torch model with the same outputs.
"""

import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs

torch.manual_seed(0)
data = cs.load_dataset("digits")
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(16 * 8 * 8, 10),
)
# One traced pass finds the units: conv channels (gated on BatchNorm's scale and shift,
# where training-mode BN cannot cancel the gate) and the Linear's inputs would be model
# inputs only for an MLP; here the units are the 16 channels.
cs.sparsify(model, example_input=data.train[0][:2])
print("gate groups:", [(g.name, g.kind, g.num_units) for g in cs.gate_groups(model)])  # [('0', 'output', 16)]

problem = cs.SparsityProblem(model, F.cross_entropy, target_density=0.4)
batches = cs.Batches(*data.train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
epochs = 40
# Library defaults; a loop of your own tells GDA the run's length (cs.fit does it for you):
# the target ramp, the dual step and the closing feasibility phase count in its fractions.
opt = cs.GDA(problem, torch.optim.Adam(model.parameters(), lr=1e-3), total_steps=epochs * len(batches))

for epoch in range(1, epochs + 1):
    for x, y in batches:
        step = opt.step(x, y)
    if epoch % 10 == 0:
        error = cs.evaluate(model, cs.Batches(*data.test, 512))
        shown = ", ".join(f"{name} {d:.3f}" for name, d in step.densities.items())
        print(f"epoch {epoch}: densities {shown}; test error {100 * error:.2f}%")
print("realized density (test-time gates):", round(problem.realized_densities()[0], 4), "target 0.4")

x_test = data.test[0]
small = cs.purge(model, x_test[:1]).eval()
model.eval()
with torch.no_grad():
    print("max |purged - gated| on the test set:", float((small(x_test) - model(x_test)).abs().max()))
before, _ = cs.count(model, x_test[:1])
after, _ = cs.count(small, x_test[:1])
print(f"params {before.params_dense} -> {after.params_dense}, MACs {before.macs_dense} -> {after.macs_dense}")
print(small)
