r"""MACs budgets: dense MACs of each layer and expected MACs under the gates.

A Linear or convolution layer spends ``dense MACs / weight entries`` MACs per active
weight entry for one example, so its expected MACs follow from the expected active
entries the accounting counts (eq. 12 of Louizos et al., 2018, under independent gates).

A decoder LM (:mod:`ctrlsparse.gating.decoders`) also spends MACs that no weight holds:
attention's scores :math:`QK^\top` and its weighted values :math:`AV`. With causal
attention over the example's :math:`T` tokens, token :math:`t` scores :math:`t + 1`
keys, so one block spends

.. math::
    2 \cdot h \cdot d_h \cdot \frac{T (T + 1)}{2}

MACs for its :math:`h` query heads of width :math:`d_h` (the causal pairs only: a kernel
that skips masked blocks spends about that, a dense one twice). Under the gates, :math:`h`
becomes the expected number of open query heads (``heads / kv_heads`` per open key-value
head) times the probabilities that the block's layer gate and attention-block gate are
open. The budget is per example; divided by :math:`T`, it is the MACs per token at
sequence length :math:`T`: give an example of the length the model will serve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrlsparse.gating.accounting import Accounting
from ctrlsparse.gating.counting import dense_macs
from ctrlsparse.gating.decoders import LAYOUT_ATTRIBUTE, DecoderLayout
from ctrlsparse.gating.groups import EXAMPLE_ATTRIBUTE
from ctrlsparse.problem.levels import ConstraintKey, Levels, parse_levels


@dataclass(frozen=True)
class AttentionMacs:
    """The score and value MACs of one attention block, and the gates that scale them.

    Attributes:
        name: the attention module.
        dense: its MACs for one example with every head open.
        heads: indices into the accounting's unit vector of its key-value head units,
            or None when its heads have no gates.
        wholes: the indices of the gates that close it whole (its layer's, its block's).
    """

    name: str
    dense: float
    heads: torch.Tensor | None
    wholes: tuple[int, ...] = ()

    def expected(self, units: torch.Tensor) -> torch.Tensor | float:
        """MACs at unit values ``units`` (open probabilities, or 0/1 when realized)."""
        macs = self.dense if self.heads is None else self.dense * units[self.heads].mean()
        for gate in self.wholes:
            macs = macs * units[gate]
        return macs


def attention_macs(layout: DecoderLayout, accounting: Accounting, tokens: int) -> list[AttentionMacs]:
    """The attention blocks of a decoder LM over ``tokens`` causal positions (module docstring).

    Examples:
        >>> [a.dense for a in attention_macs(layout, Accounting(llama), 8)]  # doctest: +SKIP
        [4608.0, 4608.0]
    """
    starts = {
        (g.name, g.kind): (start, g.num_units) for g, start in zip(accounting.groups, accounting.offsets)
    }
    wholes = [starts[key][0] for key in ((layout.base, "layer"), (layout.base, "attention")) if key in starts]
    terms = []
    for i, a in enumerate(layout.attentions):
        heads = starts.get((a.name, "head"))
        terms.append(
            AttentionMacs(
                a.name,
                2.0 * a.heads * a.head_dim * tokens * (tokens + 1) / 2,
                None if heads is None else torch.arange(heads[0], heads[0] + heads[1]),
                tuple(start + i for start in wholes),
            )
        )
    return terms


def _tokens(example) -> int:
    """The sequence length of a decoder LM's example input (its ``input_ids``)."""
    ids = example["input_ids"] if isinstance(example, dict) else example
    return int(ids.shape[-1])


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
        layout = model.__dict__.get(LAYOUT_ATTRIBUTE)
        self.attention = [] if layout is None else attention_macs(layout, accounting, _tokens(example))
        self.total += sum(a.dense for a in self.attention)

    def levels(self, value: Levels, argument: str) -> dict[str, float]:
        return {ConstraintKey.macs(k).name: v for k, v in parse_levels(value, self.layers, argument).items()}

    def fractions(self, per_param: dict, units: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MACs / dense MACs of the model and of each gated layer at the accounting's counts
        (``per_param``) and unit values (``units``, which scale a decoder's attention)."""
        layers = {n: (per_param[(n, "weight")] + self._ungated[n]) * self._per_entry[n] for n in self.layers}
        total = torch.stack(list(layers.values())).sum() + self._fixed
        total = total + sum(a.expected(units) for a in self.attention)
        return total / self.total, {n: v / self.dense[n] for n, v in layers.items()}

    def floor(self, name: str) -> float:
        """The smallest MACs fraction closing every gate leaves for constraint ``name``."""
        layer = ConstraintKey.parse(name).layer
        if layer is None:
            ungated = sum(a.dense for a in self.attention if a.heads is None and not a.wholes)
            return (
                self._fixed + ungated + sum(self._ungated[n] * self._per_entry[n] for n in self.layers)
            ) / self.total
        return self._ungated[layer] * self._per_entry[layer] / self.dense[layer]
