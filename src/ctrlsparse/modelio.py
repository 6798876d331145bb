"""Calling a model on inputs that may be a tensor, a tuple of tensors or a dict of tensors.

Hugging Face models take ``input_ids`` and ``attention_mask`` by keyword; most vision
models take one tensor. Everything in ctrlsparse that calls a model goes through
:func:`call_model`, so a problem's forward, ``evaluate``, ``count``, ``purge`` and the
benchmarks accept all three forms.

Examples:
    >>> import torch
    >>> call_model(torch.nn.Identity(), {"input": torch.ones(2)})
    tensor([1., 1.])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Inputs = torch.Tensor | tuple | list | dict
"""A model input: a tensor, a tuple/list of positional tensors, or a dict of keyword tensors."""


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)`` by the form of ``inputs``."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def map_tensors(inputs: Inputs, fn) -> Inputs:
    """``inputs`` with ``fn`` applied to every tensor."""
    if isinstance(inputs, dict):
        return {k: map_tensors(v, fn) for k, v in inputs.items()}
    if isinstance(inputs, tuple | list):
        return type(inputs)(map_tensors(v, fn) for v in inputs)
    return fn(inputs) if isinstance(inputs, torch.Tensor) else inputs


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    return map_tensors(inputs, lambda t: t.to(device))


def head(inputs: Inputs, n: int = 1) -> Inputs:
    """The first ``n`` examples of a batch of inputs."""
    return map_tensors(inputs, lambda t: t[:n])


def batch_size(inputs: Inputs) -> int:
    """The number of examples in a batch (the first dimension of its first tensor)."""
    if isinstance(inputs, torch.Tensor):
        return len(inputs)
    values = inputs.values() if isinstance(inputs, dict) else inputs
    for value in values:
        if isinstance(value, torch.Tensor):
            return len(value)
    raise ValueError("the inputs hold no tensor")


def logits(output: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, ``output.logits``, or its first element."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"cannot find the logits in a model output of type {type(output).__name__}; pass output_fn="
    )


def forward_order(model: nn.Module, names: list[str], example_input) -> list[str]:
    """``names`` in the order one eval forward pass on ``example_input`` first calls them
    (modules it does not reach keep their order, last)."""
    if example_input is None:
        return list(names)
    modules = dict(model.named_modules())
    called: list[str] = []
    handles = [
        modules[n].register_forward_pre_hook(lambda m, a, n=n: called.append(n) if n not in called else None)
        for n in names
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return called + [n for n in names if n not in called]
