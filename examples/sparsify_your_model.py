"""Sparsify your own model: per-layer targets, a plain training loop, then purge.

    .venv/bin/python examples/sparsify_your_model.py

A small CNN with BatchNorm (any nn.Module works) learns 8x8 digits under the
constraints "features.0 at most 50% active, classifier at most 30% active"; the
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
cs.sparsify(model, structure="neuron")  # gates on conv channels and on the Linear's inputs
print("gated layers:", list(cs.sparse_layers(model)))  # ['0', '4']

problem = cs.SparsityProblem(model, F.cross_entropy, target_density={"0": 0.5, "4": 0.3})
gates = [layer.gate.log_alpha for layer in problem.layers.values()]
weights = [p for p in model.parameters() if all(p is not g for g in gates)]
primal = torch.optim.Adam([{"params": weights}, {"params": gates, "lr": 1e-2}], lr=1e-3)
opt = cs.GDA(problem, primal, dual_lr=0.05)

batches = cs.Batches(*data.train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
for epoch in range(1, 41):
    for x, y in batches:
        step = opt.step(x, y)
    if epoch % 10 == 0:
        error = cs.evaluate(model, cs.Batches(*data.test, 512))
        shown = ", ".join(f"{name} {d:.3f}" for name, d in step.densities.items())
        print(f"epoch {epoch}: densities {shown}; test error {100 * error:.2f}%")

x_test = data.test[0]
small = cs.purge(model, x_test[:1]).eval()
model.eval()
with torch.no_grad():
    print("max |purged - gated| on the test set:", float((small(x_test) - model(x_test)).abs().max()))
before, _ = cs.count(model, x_test[:1])
after, _ = cs.count(small, x_test[:1])
print(f"params {before.params_dense} -> {after.params_dense}, MACs {before.macs_dense} -> {after.macs_dense}")
print(small)
