"""A parameter budget, as LLM users state it: a fraction of the dense model, or a count.

``target_params`` counts **every parameter of the model**, embeddings and LM head
included, as model cards do ("Sheared-LLaMA-1.3B"); parameters that no gate can remove
(a LayerNorm family's embeddings, say) count as always active. The budget becomes the
model-wise expected-density target over the sparsifiable parameters:

    density = (budget − parameters no gate can remove) / sparsifiable parameters.
"""

from __future__ import annotations

import math

from torch import nn

from ctrlsparse.gating.accounting import Accounting


def params_density(model: nn.Module, accounting: Accounting, target_params: float | int | str) -> float:
    """The model-wise target density equal to a budget of ``target_params`` parameters.

    Args:
        target_params: a fraction of the model's parameters in (0, 1], or a count > 1
            (a number, or a string such as ``"1.3e9"``).

    Raises:
        ValueError: the budget is not a positive number, is more than the model has, or
            is less than the parameters no gate can remove.

    Examples:
        >>> net = cs.sparsify(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
        ...                   example_input=torch.zeros(1, 4))  # doctest: +SKIP
        >>> params_density(net, Accounting(net), 0.5)  # doctest: +SKIP
    """
    try:
        value = float(target_params)
    except (TypeError, ValueError):
        raise ValueError(
            "target_params must be a fraction in (0, 1] or a parameter count such as '1.3e9', "
            f"got {target_params!r}"
        ) from None
    gates = {id(g.gate.parameter) for g in accounting.groups}
    total = sum(p.numel() for p in model.parameters() if id(p) not in gates)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"target_params must be > 0, got {target_params!r}")
    budget = value * total if value <= 1 else value
    if budget > total:
        raise ValueError(f"target_params = {target_params!r} is more than the model's {total} parameters")
    fixed = total - accounting.num_sparsifiable
    if budget <= fixed:
        raise ValueError(
            f"target_params = {target_params!r} ({budget:.0f} parameters) is not more than the {fixed} "
            "parameters no gate can remove; ask for more, or gate more of the model"
        )
    return (budget - fixed) / accounting.num_sparsifiable
