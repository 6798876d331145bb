r"""Language modelling: the next-token loss, distillation from the dense model, and perplexity.

The batches of :func:`~ctrlsparse.data.text.load_text` hold labels already shifted by one
token, so position :math:`t` of the logits predicts ``labels[t]`` and no shift happens here.

Distillation (Hinton et al., 2015) mixes the next-token loss with the KL divergence from
the teacher's (the dense model's) token distribution to the student's, both softened by a
temperature :math:`T`:

.. math::

    \mathcal L = (1 - \alpha)\,\mathrm{CE}(z_s, y)
        + \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t / T)\,\|\,\mathrm{softmax}(z_s / T)\big),

averaged over tokens; the :math:`T^2` keeps the gradient's scale independent of :math:`T`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse.modelio import Inputs, call_model, logits, to_device


def next_token_loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits (``(B, T, V)``, or a model output with ``.logits``) on
    ``labels`` (``(B, T)``, already shifted), over all tokens.

    Examples:
        >>> logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
        >>> round(float(next_token_loss(logits, torch.tensor([[1, 3]]))), 4) == round(math.log(4), 4)
        True
    """
    scores = logits(output)
    return F.cross_entropy(scores.flatten(0, -2).float(), labels.flatten())


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    weight: float = 0.5,
    temperature: float = 2.0,
) -> torch.Tensor:
    r"""``(1 - weight) * next-token CE + weight * T² * KL(teacher ‖ student)`` at temperature ``T``,
    averaged over tokens (see the module's docstring). Zero KL when the logits are equal.

    Args:
        student: the student's logits, ``(B, T, V)``.
        teacher: the teacher's logits, same shape (no gradient flows into them).
        labels: the next tokens, ``(B, T)``.
        weight: :math:`\alpha` in [0, 1]; 0 is the next-token loss alone.
        temperature: :math:`T > 0`.

    Examples:
        >>> z = torch.randn(2, 3, 5)
        >>> y = torch.randint(0, 5, (2, 3))
        >>> torch.allclose(distillation_loss(z, z, y, weight=1.0), torch.tensor(0.0), atol=1e-6)
        True
    """
    vocab = student.shape[-1]
    soft_student = F.log_softmax(student.reshape(-1, vocab).float() / temperature, dim=-1)
    soft_teacher = F.log_softmax(teacher.detach().reshape(-1, vocab).float() / temperature, dim=-1)
    kl = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="batchmean")
    return (1.0 - weight) * next_token_loss(student, labels) + weight * temperature**2 * kl


class Distillation:
    """A loss ``loss(output, labels)`` for :func:`~ctrlsparse.fit` that distills from ``teacher``.

    The training loop hands a loss the model's output and the labels, not the inputs, which
    the teacher needs: :meth:`attach` registers a forward pre-hook on the student that keeps
    the inputs of its last training forward, and the loss runs the teacher on them (in eval
    mode, without gradient). The teacher is a frozen copy of the dense model. ``output_fn``
    maps either model's output to logits (by default :func:`~ctrlsparse.modelio.logits`).

    Examples:
        >>> distill = Distillation(copy.deepcopy(model).eval(), weight=0.5, temperature=2.0)  # doctest: +SKIP
        >>> distill.attach(model)  # doctest: +SKIP
        >>> problem = SparsityProblem(model, distill, target_density=0.5)  # doctest: +SKIP
    """

    def __init__(
        self,
        teacher: nn.Module,
        weight: float = 0.5,
        temperature: float = 2.0,
        output_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"distillation weight must lie in [0, 1], got {weight!r}")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature!r}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight, self.temperature, self.output_fn = weight, temperature, output_fn or logits
        self._inputs: tuple[tuple, dict] | None = None

    def attach(self, student: nn.Module) -> torch.utils.hooks.RemovableHandle:
        """Keep the inputs of the student's training forwards; returns the hook's handle."""

        def remember(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if module.training:  # evaluation and tracing forwards are no training steps
                self._inputs = (args, kwargs)

        return student.register_forward_pre_hook(remember, with_kwargs=True)

    def __call__(self, output: Any, labels: torch.Tensor) -> torch.Tensor:
        if self._inputs is None:
            raise RuntimeError("Distillation has seen no training forward: call attach(student) first")
        args, kwargs = self._inputs
        with torch.no_grad():
            teacher = self.output_fn(self.teacher(*args, **kwargs))
        return distillation_loss(self.output_fn(output), teacher, labels, self.weight, self.temperature)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    batches: Iterable[tuple[Inputs, torch.Tensor]],
    output_fn: Callable[[Any], torch.Tensor] | None = None,
) -> float:
    """``exp`` of the mean next-token negative log-likelihood over every label of ``batches``,
    with the deterministic test-time gates (eval mode).

    Examples:
        >>> model = nn.Embedding(4, 4)  # logits 0 everywhere once zeroed: uniform over 4 tokens
        >>> _ = nn.init.zeros_(model.weight)
        >>> ids = torch.tensor([[0, 1, 2]])
        >>> round(perplexity(model, [(ids, ids)]), 4)
        4.0
    """
    output_fn = output_fn or logits
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nll, tokens = 0.0, 0
    try:
        for x, y in batches:
            x, y = to_device(x, device), y.to(device)
            scores = output_fn(call_model(model, x))
            total_nll += float(F.cross_entropy(scores.flatten(0, -2).float(), y.flatten(), reduction="sum"))
            tokens += y.numel()
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("perplexity needs at least one batch with labels")
    return math.exp(total_nll / tokens)


__all__ = ["Distillation", "distillation_loss", "next_token_loss", "perplexity"]
