"""Sparsification without gates, driven by the same training loop: ℓ1-RDA and magnitude pruning.

Both train a plain model (no :func:`~ctrlsparse.sparsify`) and measure the *realized*
density: the fraction of non-zero weights of the ``nn.Linear`` / ``nn.Conv2d`` layers
(biases are neither penalized nor pruned, and not counted). Each is a trainer for
:func:`~ctrlsparse.fit`, like :class:`~ctrlsparse.GDA`: ``step(x, y)`` returns a
:class:`~ctrlsparse.GDAStep`, ``summary()`` the final numbers, so both write the same
run directory and appear in ``ctrlsparse compare`` next to gated runs.

- :class:`L1RDA` — ℓ1 penalty trained with :class:`~ctrlsparse.training.rda.RDA` (Xu et al., 2021).
- :class:`MagnitudePruning` — train dense, prune to the target density with
  ``torch.nn.utils.prune``, fine-tune: the baseline every method is compared to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from ctrlsparse.choices import TARGET
from ctrlsparse.gating.sparsify import Structure
from ctrlsparse.problem.gda import GDAStep
from ctrlsparse.problem.levels import MODEL, Levels, parse_levels
from ctrlsparse.runs.records import RunSummary
from ctrlsparse.training.rda import RDA

_PLAIN = (nn.Linear, nn.Conv2d)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def plain_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` whose weights are sparsified, by name.

    Examples:
        >>> list(plain_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))))
        ['0', '2']
    """
    layers = {name: m for name, m in model.named_modules() if type(m) in _PLAIN and name}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to sparsify")
    return layers


def check_pruning(targets: dict[str, float], prune_epoch: int) -> None:
    """The arguments every magnitude trainer checks: targets in (0, 1], a prune epoch >= 0."""
    if not targets:
        raise ValueError("magnitude pruning needs a target_density")
    for name, eps in targets.items():
        TARGET.check(eps, f"target_density for {name!r}")
    if prune_epoch < 0:
        raise ValueError(f"prune_epoch must be >= 0, got {prune_epoch!r}")


def prune_due(trainer) -> bool:
    """True when a magnitude trainer has not pruned yet and epoch ``prune_epoch + 1`` has begun."""
    if trainer.pruned:
        return False
    if trainer.prune_epoch and not trainer.steps_per_epoch:
        raise ValueError("magnitude pruning needs steps_per_epoch (fit() sets it from the batches)")
    return trainer.steps >= trainer.prune_epoch * (trainer.steps_per_epoch or 0)


class _WeightSparsity:
    """Shared by the gate-free trainers: density bookkeeping and the step record."""

    method: str
    mode: str

    def __init__(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.layers = plain_layers(model)
        self.num_sparsifiable = sum(m.weight.numel() for m in self.layers.values())
        self.steps = 0
        self.steps_per_epoch: int | None = None

    def _nonzeros(self) -> torch.Tensor:
        # ``m.weight`` is the masked weight once torch.nn.utils.prune has reparameterized it.
        return torch.stack([torch.count_nonzero(m.weight.detach()) for m in self.layers.values()])

    def densities(self, nonzeros: list[float] | None = None) -> tuple[float, dict[str, float]]:
        """Fraction of non-zero weights in the model and per layer (from ``nonzeros`` if given)."""
        nonzeros = self._nonzeros().tolist() if nonzeros is None else nonzeros
        per_layer = {name: n / m.weight.numel() for (name, m), n in zip(self.layers.items(), nonzeros)}
        return sum(nonzeros) / self.num_sparsifiable, per_layer

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> GDAStep:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        # One host transfer for the loss and every layer's count.
        values = torch.cat([loss.detach().reshape(1).float(), self._nonzeros().float()]).tolist()
        density, densities = self.densities(values[1:])
        return GDAStep(values[0], density, densities, {}, {})

    def finish(self) -> bool:
        """Called by :func:`~ctrlsparse.fit` after the last step; nothing changes."""
        return False

    def state_dict(self) -> dict:
        """The optimizer's state and the step counter (the model's state is saved on its own)."""
        return {"steps": self.steps, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.optimizer.load_state_dict(state["optimizer"])

    def summary(self) -> RunSummary:
        density, densities = self.densities()
        return RunSummary(
            method=self.method,
            mode=self.mode,
            targets={},
            penalties={},
            density=density,
            densities=densities,
            realized_density=density,
            realized_densities=densities,
        )


class L1RDA(_WeightSparsity):
    r"""Minimize :math:`\mathcal L(w) + \lambda\|w\|_1` over the Linear/Conv2d weights with ℓ1-RDA.

    Every parameter is trained by :class:`~ctrlsparse.training.rda.RDA`; the weights of the
    sparsified layers carry the penalty, every other parameter (biases, BatchNorm) is
    trained by the same dual averaging with :math:`\lambda = 0`. The density is not
    controlled: find the λ for a target with ``ctrlsparse tune-penalty``.

    Args:
        model: a plain model (no gates).
        loss_fn: ``loss_fn(model(x), y)`` → scalar.
        penalty: λ, a number for every layer or ``{layer name: λ}`` (unlisted layers get 0).
        gamma: RDA's :math:`\gamma` (the first step is ``grad / gamma``).

    Examples:
        >>> trainer = L1RDA(model, F.cross_entropy, penalty=1e-4, gamma=1.0)  # doctest: +SKIP
        >>> summary = fit(trainer, train_batches, epochs=10)  # doctest: +SKIP
    """

    method = "l1_rda"
    mode = "penalized"

    def __init__(self, model: nn.Module, loss_fn: LossFn, penalty: Levels, gamma: float = 1.0) -> None:
        layers = plain_layers(model)
        names = list(layers)
        levels = parse_levels(penalty, names, "penalty")
        if MODEL in levels:
            levels = {name: levels[MODEL] for name in names}
        for name, lam in levels.items():
            if not (lam >= 0.0 and math.isfinite(lam)):
                raise ValueError(f"penalty for {name!r} must be a finite number >= 0, got {lam!r}")
        weights = {id(m.weight) for m in layers.values()}
        groups = [{"params": [layers[name].weight], "penalty": levels.get(name, 0.0)} for name in names]
        others = [p for p in model.parameters() if id(p) not in weights]
        if others:
            groups.append({"params": others, "penalty": 0.0})
        super().__init__(model, loss_fn, RDA(groups, gamma=gamma))
        self.penalties = levels

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> GDAStep:
        """One RDA step on a minibatch."""
        return self._train_step(inputs, targets)

    def summary(self) -> RunSummary:
        summary = super().summary()
        summary.penalties = dict(self.penalties)
        return summary


class MagnitudePruning(_WeightSparsity):
    """Train dense, prune the smallest weights (or neurons / channels) to ``target_density``, fine-tune.

    Pruning happens once, at the start of epoch ``prune_epoch + 1`` (or after the
    last step when training ends first), with ``torch.nn.utils.prune``, whose ``amount`` is
    the weights to *remove* (a sparsity): ε = 0.3 keeps 0.3 of them, ``amount`` ≈ 0.7 of them.

    - ``structure="weight"``: the smallest |w| — over all layers at once for a
      model-wise target (``global_unstructured``), per layer for per-layer targets
      (``l1_unstructured``). The density is exactly the target, up to one weight.
    - ``structure="neuron"``: whole input features of Linear layers and output
      channels of Conv2d layers (the groups of the gated layers), smallest L2 norm
      first — per layer with ``ln_structured``, or model-wise by the groups' RMS so
      layers with different group sizes compete fairly. The density is at most the
      target: groups are kept greedily, largest RMS first, while they fit.

    The masks stay attached during fine-tuning (pruned weights get no update) and are
    made permanent by :meth:`finish`, so ``model.pt`` is a plain state dict with zeros.

    Args:
        model: a plain model (no gates).
        loss_fn: ``loss_fn(model(x), y)`` → scalar.
        target_density: ε in (0, 1]: a number (model-wise) or ``{layer: ε}`` / a list.
        optimizer: trains the model before and after pruning.
        prune_epoch: the number of dense epochs; needs ``steps_per_epoch`` (``fit`` sets it).
        structure: ``"weight"`` or ``"neuron"``.

    Examples:
        >>> trainer = MagnitudePruning(model, F.cross_entropy, 0.1, torch.optim.Adam(model.parameters()),
        ...                            prune_epoch=8)  # doctest: +SKIP
        >>> summary = fit(trainer, train_batches, epochs=10)  # 8 dense, 2 fine-tuning  # doctest: +SKIP
    """

    method = "magnitude"
    mode = "pruned"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        target_density: Levels,
        optimizer: torch.optim.Optimizer,
        prune_epoch: int,
        structure: str | Structure = Structure.WEIGHT,
    ) -> None:
        super().__init__(model, loss_fn, optimizer)
        self.targets = parse_levels(target_density, list(self.layers), "target_density")
        check_pruning(self.targets, prune_epoch)
        if MODEL in self.targets and len(self.targets) > 1:
            raise ValueError("give magnitude pruning a model-wise target or per-layer targets, not both")
        self.prune_epoch = prune_epoch
        self.structure = Structure.parse(structure)
        self.pruned = False

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> GDAStep:
        """One optimizer step; the first step of epoch ``prune_epoch + 1`` prunes before it."""
        if prune_due(self):
            self.prune()
        return self._train_step(inputs, targets)

    @torch.no_grad()
    def prune(self) -> None:
        """Prune to the target density now (once)."""
        if self.pruned:
            return
        layers = self.layers
        if self.structure is Structure.WEIGHT:
            if MODEL in self.targets:
                keep = round(self.targets[MODEL] * self.num_sparsifiable)
                prune.global_unstructured(
                    [(m, "weight") for m in layers.values()],
                    pruning_method=prune.L1Unstructured,
                    amount=self.num_sparsifiable - keep,
                )
            else:
                for name, eps in self.targets.items():
                    n = layers[name].weight.numel()
                    prune.l1_unstructured(layers[name], "weight", amount=n - round(eps * n))
        elif MODEL in self.targets:
            self._prune_groups_globally(self.targets[MODEL])
        else:
            for name, eps in self.targets.items():
                module = layers[name]
                dim = 1 if isinstance(module, nn.Linear) else 0
                groups = module.weight.shape[dim]
                prune.ln_structured(module, "weight", amount=groups - math.floor(eps * groups), n=2, dim=dim)
        self.pruned = True

    def _prune_groups_globally(self, eps: float) -> None:
        """Remove the groups of smallest RMS across layers until the density is at most ``eps``."""
        scores, sizes, owners = [], [], []
        for name, module in self.layers.items():
            w = module.weight
            sq = w.pow(2).sum(0) if isinstance(module, nn.Linear) else w.pow(2).flatten(1).sum(1)
            group_size = w.numel() // sq.numel()
            scores.append((sq / group_size).sqrt())
            sizes.append(torch.full_like(sq, group_size))
            owners += [(name, i) for i in range(sq.numel())]
        order = torch.cat(scores).argsort(descending=True).tolist()
        size = torch.cat(sizes).tolist()
        budget, kept = eps * self.num_sparsifiable, 0.0
        keep: set[int] = set()
        for index in order:  # largest first, skipping groups that would exceed the budget
            if kept + size[index] <= budget:
                keep.add(index)
                kept += size[index]
        masks = {name: torch.zeros_like(m.weight) for name, m in self.layers.items()}
        for index in keep:
            name, i = owners[index]
            if isinstance(self.layers[name], nn.Linear):
                masks[name][:, i] = 1
            else:
                masks[name][i] = 1
        for name, module in self.layers.items():
            prune.custom_from_mask(module, "weight", masks[name])

    def state_dict(self) -> dict:
        """The optimizer's state, the step counter and which layers carry a pruning mask."""
        pruned = [name for name, m in self.layers.items() if prune.is_pruned(m)]
        return {**super().state_dict(), "pruned": self.pruned, "pruned_layers": pruned}

    def load_state_dict(self, state: dict) -> None:
        """Restore the trainer; load it before the model's state, which then holds the masks."""
        super().load_state_dict(state)
        for name in state["pruned_layers"]:  # the masks' slots (weight_orig, weight_mask)
            if not prune.is_pruned(self.layers[name]):
                prune.identity(self.layers[name], "weight")
        self.pruned = state["pruned"]

    def finish(self) -> bool:
        """Prune if training ended before ``prune_epoch``, then make the masks permanent.

        Returns True when it pruned here (the model's outputs changed after the last epoch).
        """
        pruned_now = not self.pruned
        self.prune()
        for module in self.layers.values():
            if prune.is_pruned(module):
                prune.remove(module, "weight")
        return pruned_now

    def summary(self) -> RunSummary:
        summary = super().summary()
        summary.targets = dict(self.targets)
        return summary
