r"""Expected and realized active parameters of a gated model, per layer and in total.

A parameter is active when every gate it depends on is open: the weight :math:`W[o, i]`
of a layer dies if its output unit *or* its input unit closes. Under independent gates
the expected number of active entries of a parameter whose dimension :math:`d` is gated
by :math:`z_d` is

.. math::
    \mathbb E\big[\#\text{active}\big] = \sum_{i_1,\dots,i_k}\ \prod_d P(z_{d,i_d} \neq 0)
    = \prod_d \Big(\sum_{i} P(z_{d,i} \neq 0)\Big) \cdot (\text{size of the ungated dimensions}),

eq. 16 of Louizos et al. (2018) when one gate covers a group; P(z ≠ 0) is eq. 12 for
hard concrete gates. The *realized* count replaces P(z ≠ 0) by 1[ẑ > 0] with the
test-time gate ẑ (eq. 13): the entries purging removes are the others. Only
*sparsifiable* entries count, those with at least one gate.

Two countings are in use (docs/structure.md): ``structure="neuron"`` groups own every
slice of their unit (the producer's rows, BatchNorm entries, the consumers' columns);
``structure="paper"`` groups own their own layer's slice only, as in the papers' MLP and
LeNet-5 numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ctrlsparse.gating.groups import GateGroup, fusable, gate_groups
from ctrlsparse.gating.registry import is_layer


@dataclass
class _Param:
    module: nn.Module
    layer: str
    name: str
    maps: dict[int, torch.Tensor]
    """dim -> index into the concatenated gate vector (the last entry is a constant 1)."""
    full: torch.Tensor | None
    whole: torch.Tensor
    """Indices of the gates that switch off every entry (layer gates; usually empty)."""
    gated: torch.Tensor
    sparsifiable: int
    ungated: int

    def tensor(self) -> torch.Tensor:
        """The parameter as stored (before its gates scale it)."""
        parametrizations = getattr(self.module, "parametrizations", None)
        if parametrizations is not None and self.name in parametrizations:
            return parametrizations[self.name].original
        return getattr(self.module, self.name)


class Accounting:
    """Counts active parameters of a sparsified model from its gates.

    Args:
        model: a model after :func:`~ctrlsparse.sparsify`.
        order: layer names in the order to report them (default: registration order).

    Examples:
        >>> import ctrlsparse as cs
        >>> net = cs.sparsify(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
        ...                   example_input=torch.zeros(1, 4))
        >>> acc = Accounting(net)
        >>> acc.num_sparsifiable, acc.layer_sizes
        (21, {'0': 15, '2': 6})
    """

    def __init__(self, model: nn.Module, order: list[str] | None = None) -> None:
        self.groups: list[GateGroup] = gate_groups(model)
        if not self.groups:
            raise ValueError(
                f"{type(model).__name__} has no gates: call ctrlsparse.sparsify(model, ...) first"
            )
        offsets, total = {}, 0
        for group in self.groups:
            offsets[id(group)] = total
            total += group.num_units
        self._sentinel = total
        modules = dict(model.named_modules())
        per_param: dict[tuple[str, str], dict] = {}
        for group in self.groups:
            for s in group.slices:
                entry = per_param.setdefault((s.module, s.param), {"maps": {}, "full": None, "whole": []})
                param = getattr(modules[s.module], s.param)
                if s.whole:
                    entry["whole"].append(int(s.units[0]) + offsets[id(group)])
                    continue
                if s.dim is None:
                    entry["full"] = s.units.reshape(param.shape) + offsets[id(group)]
                    continue
                index = entry["maps"].setdefault(
                    s.dim, torch.full((param.shape[s.dim],), total, dtype=torch.long)
                )
                index[s.positions] = s.units + offsets[id(group)]
        device = self.groups[0].gate.parameter.device
        self.params: list[_Param] = []
        for (module_name, param_name), entry in per_param.items():
            module = modules[module_name]
            shape = getattr(module, param_name).shape
            gated = torch.zeros(shape, dtype=torch.bool)
            if entry["full"] is not None or entry["whole"]:
                gated[...] = True
            for dim, index in entry["maps"].items():
                view = [1] * len(shape)
                view[dim] = -1
                gated |= (index != total).view(view)
            ungated = int((~gated).sum())
            self.params.append(
                _Param(
                    module,
                    module_name,
                    param_name,
                    {d: i.to(device) for d, i in entry["maps"].items()},
                    None if entry["full"] is None else entry["full"].to(device),
                    torch.tensor(entry["whole"], dtype=torch.long, device=device),
                    gated.to(device),
                    math.prod(shape) - ungated,
                    ungated,
                )
            )
        names = [name for name, m in model.named_modules() if is_layer(m)]
        layers = [n for n in names if any(p.layer == n for p in self.params)]
        if order is not None:
            layers = [n for n in order if n in layers] + [n for n in layers if n not in order]
        self.layer_sizes = {n: sum(p.sparsifiable for p in self.params if p.layer == n) for n in layers}
        self.num_sparsifiable = sum(p.sparsifiable for p in self.params)
        self._plan = _CountPlan(self.params, total, list(self.layer_sizes), device)

    @property
    def layers(self) -> list[str]:
        return list(self.layer_sizes)

    @property
    def offsets(self) -> list[int]:
        """Index of each group's first unit in :meth:`vector` (groups in order)."""
        starts, total = [], 0
        for group in self.groups:
            starts.append(total)
            total += group.num_units
        return starts

    def vector(self, realized: bool = False) -> torch.Tensor:
        """Every unit's P(z != 0) (or 1[ẑ > 0] when ``realized``), groups concatenated in order."""
        return self._vector(realized)[:-1]

    def _vector(self, realized: bool) -> torch.Tensor:
        if realized:
            parts = [(g.deterministic() > 0).to(g.gate.parameter.dtype).flatten() for g in self.groups]
        elif fusable(self.groups):
            parts = [type(self.groups[0].gate).prob_active_all([g.gate for g in self.groups])]
        else:
            parts = [g.prob_active().flatten() for g in self.groups]
        return torch.cat([*parts, parts[0].new_ones(1)])

    def _elementwise(self, p: torch.Tensor, param: _Param) -> torch.Tensor:
        """Σ over the entries of a parameter with an element-wise gate of the product of their
        gates' values (the other parameters: :class:`_CountPlan`)."""
        product = p[param.full]
        for dim, index in param.maps.items():
            view = [1] * product.dim()
            view[dim] = -1
            product = product * p[index].view(view)
        return product.sum() * p[param.whole].prod()

    def per_param(
        self, realized: bool = False, units: torch.Tensor | None = None
    ) -> dict[tuple[str, str], torch.Tensor]:
        """Expected (or realized) active sparsifiable entries of each ``(layer, parameter)``;
        ``units`` replaces the gates' values (one value per unit, as :meth:`vector`)."""
        p = self._vector(realized) if units is None else torch.cat([units, units.new_ones(1)])
        plan = self._plan
        parts = []
        if plan.factored:  # parameters whose gated dimensions factor: a few kernels for all of them
            parts.append(plan.factored_counts(p))
        parts += [self._elementwise(p, self.params[i]).reshape(1) for i in plan.elementwise]
        counts = parts[0] if len(parts) == 1 else torch.cat(parts)
        if plan.order is not None:
            counts = counts.index_select(0, plan.order)
        counts = counts - plan.ungated.to(counts)
        return _Counts(((q.layer, q.name) for q in self.params), counts)

    def active(
        self, realized: bool = False, units: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Expected (or realized) active sparsifiable parameters: the total and per layer."""
        return self._totals(self.per_param(realized, units))

    def _totals(
        self, per_param: dict[tuple[str, str], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sum of :meth:`per_param`'s counts, and their sums per layer."""
        if isinstance(per_param, _Counts):
            counts = per_param.vector
            per_layer = self._plan.layer_sums(counts)
            return counts.sum(), dict(zip(self.layer_sizes, per_layer.unbind()))
        per_layer: dict[str, torch.Tensor] = {}
        for (layer, _), value in per_param.items():
            if layer in self.layer_sizes:
                per_layer[layer] = per_layer.get(layer, 0) + value
        total = torch.stack(list(per_param.values())).sum()
        return total, {n: per_layer[n] for n in self.layer_sizes}

    def densities(
        self, realized: bool = False, units: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Expected (differentiable) or realized density of the model and of each layer
        (with ``units``: at those unit values, see :meth:`per_param`)."""
        return self.densities_from(self.per_param(realized, units))

    def densities_from(
        self, per_param: dict[tuple[str, str], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Model and per-layer densities from :meth:`per_param`'s counts."""
        if isinstance(per_param, _Counts):
            model, per_layer = self.density_vector(per_param)
            return model, dict(zip(self.layer_sizes, per_layer.unbind()))
        total, per_layer = self._totals(per_param)
        return total / self.num_sparsifiable, {
            n: per_layer[n] / self.layer_sizes[n] for n in self.layer_sizes
        }

    def density_vector(
        self, per_param: dict[tuple[str, str], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model density and the layers' densities as one vector, in :attr:`layers` order."""
        if isinstance(per_param, _Counts):
            counts = per_param.vector
            per_layer = self._plan.layer_sums(counts) / self._plan.layer_sizes.to(counts)
            return counts.sum() / self.num_sparsifiable, per_layer
        model, per_layer = self.densities_from(per_param)
        return model, torch.stack(list(per_layer.values()))

    def expected_l2(self) -> torch.Tensor:
        r"""Expected squared L2 norm of the sparsifiable parameters under the gates (eq. 15, 17)."""
        p = self._vector(False)
        total = p.new_zeros(())
        for param in self.params:
            weight = param.tensor().pow(2) * param.gated
            product = p[param.full] if param.full is not None else None
            for dim, index in param.maps.items():
                view = [1] * weight.dim()
                view[dim] = -1
                factor = p[index].view(view)
                product = factor if product is None else product * factor
            total = total + (weight * product).sum() * p[param.whole].prod()
        return total


class _Counts(dict):
    """:meth:`Accounting.per_param`'s counts by ``(layer, parameter)``, with the same counts as
    one tensor (``vector``, in the accounting's parameter order) for the totals."""

    def __init__(self, keys, vector: torch.Tensor) -> None:
        super().__init__(zip(keys, vector.unbind()))
        self.vector = vector


class _CountPlan:
    r"""Index tensors that count every parameter of the accounting in a few kernels.

    For a parameter whose gated dimensions each carry one unit per position (channel,
    neuron and head gates), the sum over its entries of the product of their gates'
    values factors into the product, over those dimensions, of the sum of the gate
    values along each (the formula of the module docstring). All those sums are one
    gather and one ``index_add``; each parameter's product is one gather and ``prod``;
    the per-layer totals one more ``index_add``. Parameters with an element-wise gate
    (``dim=None``) are counted one by one (:meth:`Accounting._elementwise`).
    """

    def __init__(self, params: list[_Param], sentinel: int, layers: list[str], device) -> None:
        self.factored = [i for i, q in enumerate(params) if q.full is None]
        self.elementwise = [i for i, q in enumerate(params) if q.full is not None]
        computed = self.factored + self.elementwise
        self.order = None
        if computed != list(range(len(params))):
            self.order = torch.as_tensor([computed.index(i) for i in range(len(params))], device=device)
        positions, dims, sizes = [], [], []
        for i in self.factored:
            q = params[i]
            size = q.gated.numel()
            for dim, index in q.maps.items():
                positions.append(index)
                size //= q.gated.shape[dim]
            positions += list(q.whole.reshape(-1, 1))  # a layer gate: a factor of one gate
            dims.append(len(q.maps) + len(q.whole))
            sizes.append(size)
        # Row r of the sums is one (parameter, dimension) pair; the last row sums the constant 1.
        count = sum(dims)
        rows = [
            torch.full((len(index),), r, dtype=torch.long, device=device) for r, index in enumerate(positions)
        ]
        positions.append(torch.full((1,), sentinel, dtype=torch.long, device=device))
        rows.append(torch.full((1,), count, dtype=torch.long, device=device))
        self.positions = torch.cat(positions)
        self.rows = torch.cat(rows)
        self.num_rows = count + 1
        width = max(dims, default=1)
        table, start = [], 0
        for d in dims:  # each parameter's rows, padded with the constant row
            table.append(list(range(start, start + d)) + [count] * (width - d))
            start += d
        self.table = torch.as_tensor(table, dtype=torch.long, device=device).reshape(len(dims), width)
        self.sizes = torch.as_tensor(sizes, dtype=torch.float32, device=device)
        self.ungated = torch.as_tensor([float(q.ungated) for q in params], device=device)
        # Parameters outside the reported layers (BatchNorm entries, ...) go to a last bucket.
        slot = {n: k for k, n in enumerate(layers)}
        self.layer_of = torch.as_tensor([slot.get(q.layer, len(layers)) for q in params], device=device)
        self.num_layers = len(layers)
        self.layer_sizes = torch.as_tensor(
            [float(sum(q.sparsifiable for q in params if q.layer == n)) for n in layers], device=device
        )

    def factored_counts(self, p: torch.Tensor) -> torch.Tensor:
        """Σ over each factored parameter's entries of the product of their gates' values."""
        sums = p.new_zeros(self.num_rows).index_add(0, self.rows, p.index_select(0, self.positions))
        return sums[self.table].prod(dim=1) * self.sizes.to(p)

    def layer_sums(self, counts: torch.Tensor) -> torch.Tensor:
        """The counts summed per reported layer."""
        sums = counts.new_zeros(self.num_layers + 1).index_add(0, self.layer_of, counts)
        return sums[: self.num_layers]
