"""Why gates sit after BatchNorm: the task gradient a channel gate receives, with and without BN.

    .venv/bin/python examples/batchnorm_gate_gradient.py

In training mode BN(z·a) = BN(a), so a gate on a conv's output before BN gets almost no
gradient. ctrlsparse gates BN's scale and shift instead. This prints the median
|∂L/∂log α| over 20 gate samples for a Conv→BN→ReLU net and the same net without BN
(docs/structure.md).
"""

import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs


class ConvNet(nn.Module):
    def __init__(self, norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(F.relu(self.bn2(self.conv2(x))).mean((2, 3)))


def median_gate_gradient(norm: bool, seed: int) -> float:
    torch.manual_seed(seed)
    net = cs.sparsify(ConvNet(norm), example_input=torch.zeros(2, 3, 8, 8))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for _ in range(20):  # a sample at exactly 0 or 1 passes no gradient: sum over samples
        F.cross_entropy(net(x), y).backward()
    return float(torch.cat([g.gate.log_alpha.grad.abs() for g in cs.gate_groups(net)]).median())


for seed in range(3):
    with_bn, without_bn = median_gate_gradient(True, seed), median_gate_gradient(False, seed)
    print(f"seed {seed}: with BN {with_bn:.3g}, without {without_bn:.3g} ({with_bn / without_bn:.1f}x)")
