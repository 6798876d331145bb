"""MACs budgets: dense MACs of each layer and expected MACs under the gates.

A Linear or convolution layer spends ``dense MACs / weight entries`` MACs per active
weight entry for one example, so its expected MACs follow from the expected active
entries the accounting counts (eq. 12 of Louizos et al., 2018, under independent gates).
"""

from __future__ import annotations

import torch
from torch import nn

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.counting import dense_macs
from ctrlsparse.gating.groups import EXAMPLE_ATTRIBUTE
from ctrlsparse.problem.levels import ConstraintKey, Levels, parse_levels


class MacsAccounting:
    """Dense MACs of each layer, and the expected MACs of the gated ones from their active weights.

    A Linear or convolution layer spends ``dense / weight.numel()`` MACs per weight entry
    for one example (positions × kernel per entry), so its MACs are that times its active
    entries: ungated entries always, gated ones as the accounting counts them (the product
    of the open fractions of the input and output units under independent gates).
    """

    def __init__(self, model: nn.Module, accounting: Accounting, example_input) -> None:
        example = example_input if example_input is not None else model.__dict__.get(EXAMPLE_ATTRIBUTE)
        if example is None:
            raise ValueError(
                "a MACs budget (target_macs / macs_penalty) counts each layer's MACs on one example: "
                "pass example_input=<one batch> to SparsityProblem (or to sparsify)"
            )
        self.dense = dense_macs(model, example)
        self.total = sum(self.dense.values())
        if self.total == 0:
            raise ValueError("the example input reaches no Linear or convolution layer: no MACs to budget")
        modules = dict(model.named_modules())
        # Gated layers that spend MACs: the layers a MACs budget may name, in forward order.
        weights = {q.layer: q for q in accounting.params if q.name == "weight"}
        self.layers = [n for n in accounting.layers if n in weights and self.dense.get(n, 0) > 0]
        self._per_entry = {n: self.dense[n] / modules[n].weight.numel() for n in self.layers}
        self._ungated = {n: weights[n].ungated for n in self.layers}
        self._fixed = self.total - sum(self.dense[n] for n in self.layers)

    def levels(self, value: Levels, argument: str) -> dict[str, float]:
        return {ConstraintKey.macs(k).name: v for k, v in parse_levels(value, self.layers, argument).items()}

    def fractions(self, per_param: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MACs / dense MACs of the model and of each gated layer at the accounting's counts."""
        layers = {n: (per_param[(n, "weight")] + self._ungated[n]) * self._per_entry[n] for n in self.layers}
        total = torch.stack(list(layers.values())).sum() + self._fixed
        return total / self.total, {n: v / self.dense[n] for n, v in layers.items()}

    def floor(self, name: str) -> float:
        """The smallest MACs fraction closing every gate leaves for constraint ``name``."""
        layer = ConstraintKey.parse(name).layer
        if layer is None:
            return (
                self._fixed + sum(self._ungated[n] * self._per_entry[n] for n in self.layers)
            ) / self.total
        return self._ungated[layer] * self._per_entry[layer] / self.dense[layer]
