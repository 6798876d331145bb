"""Gate groups: one stochastic gate per prunable unit, attached to a model by parametrization.

A *unit* is a set of parameter slices that live or die together: a Linear's hidden
neuron (a row and bias entry of the producer, a column of the consumer), a conv channel
with its BatchNorm entries and the next layers' input slices, a residual stream channel
shared by every producer of the add, an attention head. A :class:`GateGroup` holds one
gate tensor for a set of units (those of one root layer) and

- ``slices``: every parameter slice a unit owns, for counting (a parameter is active
  when every gate it depends on is open) and for purging;
- *sites*: the parameter slices the gate multiplies, registered with
  :mod:`torch.nn.utils.parametrize` as :class:`GateScale`. A site is chosen where nothing
  downstream can undo the gate: BatchNorm's affine ``weight`` and ``bias`` when
  normalisation follows (BN(z·a) = BN(a) in training mode would cancel a gate placed
  before it), else the producer's rows and bias, or the consumer's columns for the
  model's inputs. Scaling weights costs O(parameters), not O(activations); the one
  exception is a plain ``nn.Linear``'s gated columns, whose gates scale the layer's input
  instead in a forward where that is smaller (fewer input rows than the layer has
  outputs, and an input whose gradient is computed anyway: ``linear(x · z, W) =
  linear(x, W · z)``; :func:`_scale_inputs`).

All sites of a group see the same sample: a forward pre-hook on the model draws one
sample per group per forward (hard concrete eq. 10–11 in training mode, eq. 13 in eval
mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ctrlsparse.gating.gates import Gate

GROUPS_ATTRIBUTE = "_ctrlsparse_gate_groups"
"""Attribute of a sparsified model listing its gate groups (a plain list, copied by deepcopy)."""
EXAMPLE_ATTRIBUTE = "_ctrlsparse_example_input"
"""Attribute of a sparsified model holding one example of the input it was sparsified with."""
INPUT_SCALE_ATTRIBUTE = "_ctrlsparse_input_scale"
"""Attribute of a Linear whose gated columns may scale its input: that :class:`GateScale`
(outside ``_modules``, so not registered twice; a deepcopy maps it to the copy's own)."""
SKIP_ATTRIBUTE = "_ctrlsparse_skip"
"""Attribute of a layer that skips dead units: its live indices, ``{"in": index, "out": index}``."""
ALIGNED_KINDS = frozenset({"output", "input", "hidden"})
"""Unit kinds whose open count ``round_to`` aligns: channels, neurons and hidden dimensions.
A head or a decoder layer is one unit of many channels, whole already."""


@dataclass(frozen=True)
class Slice:
    """Positions along one dimension of one parameter, and the unit each belongs to.

    ``dim=None`` means element-wise: ``units`` has the parameter's shape (weight gates).
    ``whole=True`` means every entry belongs to the one unit ``units[0]`` (a decoder LM's
    layer gate, on top of the gates of the parameter's dimensions); ``dim`` is None.
    """

    module: str
    param: str
    dim: int | None
    positions: torch.Tensor
    units: torch.Tensor
    whole: bool = False

    @classmethod
    def of_whole(cls, module: str, param: str, unit: int) -> Slice:
        """Every entry of ``module.param``, as unit ``unit``.

        Examples:
            >>> Slice.of_whole("model.layers.0.self_attn.o_proj", "weight", 0).whole
            True
        """
        return cls(module, param, None, torch.zeros(0, dtype=torch.long), torch.tensor([unit]), whole=True)


class GateScale(nn.Module):
    """Parametrization ``X -> X * z`` along ``dim`` with the gates of one group.

    ``mapping[i]`` is the unit of position ``i`` of that dimension, or ``num_units`` for a
    position the group does not gate (its scale is 1). ``mapping=None`` is the identity
    (position i is unit i), the common case. With ``dim=None`` and a one-entry ``mapping``,
    that unit scales the whole tensor (a layer gate).
    """

    def __init__(self, group: GateGroup, dim: int | None, mapping: torch.Tensor | None) -> None:
        super().__init__()
        self._group = (group,)  # a tuple: not a submodule, so its gate is not in this state_dict twice
        self.dim = dim
        self.register_buffer("mapping", mapping, persistent=False)
        # True only inside a Linear's forward whose input this scale multiplies instead.
        self.on_input = False

    @property
    def group(self) -> GateGroup:
        return self._group[0]

    def along(self) -> torch.Tensor:
        """This forward's gate value of each position along ``dim``."""
        z = self.group.current()
        if self.mapping is not None:
            z = torch.cat([z, z.new_ones(1)]).index_select(0, self.mapping)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.on_input:
            return x
        if self.dim is None:
            z = self.group.current()
            return x * (z if self.mapping is None else z.index_select(0, self.mapping))
        z = self.along()
        if x.dim() == 1:  # a bias or a normalisation's affine entries: no view to make
            return x * z
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * z.view(shape)


class GateGroup(nn.Module):
    """One gate per unit of a root layer, with the slices the units own.

    Args:
        name: the root module's name (the layer whose outputs, inputs or heads the units are).
        kind: ``"output"``, ``"input"``, ``"head"`` or ``"weight"``.
        gate: the gate tensor (one gate per unit; the weight's shape for ``"weight"``).
        slices: the parameter slices the units own.
        prune: how purging removes a unit: ``(module name, "out" | "in", width)``, a unit
            being ``width`` consecutive channels of that module's outputs or inputs, or
            ``(module name, "heads", head_dim)`` for the heads of a packed attention module
            (``nn.MultiheadAttention``), replaced by its registered purge; None when purging
            cannot remove units (weight gates).

    Examples:
        >>> import ctrlsparse as cs
        >>> net = cs.sparsify(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)),
        ...                   example_input=torch.zeros(1, 4))
        >>> [(g.name, g.kind, g.num_units) for g in gate_groups(net)]
        [('0', 'input', 4), ('0', 'output', 3)]
    """

    def __init__(
        self,
        name: str,
        kind: str,
        gate: Gate,
        slices: list[Slice],
        prune: tuple[str, str, int] | None = None,
    ) -> None:
        super().__init__()
        self.name, self.kind, self.gate = name, kind, gate
        self.slices = slices
        self.prune = prune
        # Producers that may skip a closed unit's outputs: only a gated normalisation reads them.
        self.silent: tuple[str, ...] = ()
        self._z: torch.Tensor | None = None
        # 1 for a live unit, 0 for one forced closed while layers skip it (gating/skipping.py).
        self.live: torch.Tensor | None = None
        # The gate values fixed by decide_() (None while the gates are stochastic).
        self.register_buffer("decided", None)
        self.round_to = 1
        """Open units are kept in multiples of this, or all of them (``sparsify(round_to=...)``)."""

    @property
    def num_units(self) -> int:
        return self.gate.parameter.numel()

    def aligned(self, count: int, up: bool = False) -> int:
        """The open count ``round_to`` allows nearest ``count`` from below (from above with ``up``):
        a multiple of ``round_to``, or every unit of the group.

        A group of fewer than ``round_to`` units keeps all or none of them; one that is not a
        multiple keeps a multiple or all (20 channels with ``round_to=8``: 0, 8, 16 or 20).

        Examples:
            >>> from ctrlsparse.gating.gates import MaskGate
            >>> group = GateGroup("conv", "output", MaskGate((20,)), [])
            >>> group.round_to = 8
            >>> group.aligned(13), group.aligned(13, up=True), group.aligned(17, up=True)
            (8, 16, 20)
        """
        if up:
            return min(-(-count // self.round_to) * self.round_to, self.num_units)
        return self.num_units if count >= self.num_units else count // self.round_to * self.round_to

    def resample(self, sample: torch.Tensor | None = None) -> torch.Tensor:
        """Draw this forward's gates: a sample in training mode (``sample``, where the model's
        groups drew theirs together), eq. 13 in eval mode; the fixed values once
        :meth:`decide_` has been called; 0 for units a layer skips."""
        if sample is None and self.decided is None:
            sample = self.gate()
        z = self.decided if self.decided is not None else sample
        self._z = z if self.live is None or not self.training else z * self.live.to(z)
        return self._z

    def prob_active(self) -> torch.Tensor:
        """P(z != 0) per unit (eq. 12 for hard concrete); 0 or 1 once decided."""
        if self.decided is not None:
            return (self.decided > 0).to(self.decided.dtype)
        return self.gate.prob_active()

    def deterministic(self) -> torch.Tensor:
        """The test-time gates (eq. 13 for hard concrete); the fixed values once decided."""
        return self.decided if self.decided is not None else self.gate.deterministic()

    @torch.no_grad()
    def decide_(self, values: torch.Tensor) -> None:
        """Fix the gates at ``values`` (0 closes a unit) in training and eval mode alike, and
        stop the gate parameter from learning: what the feasibility phase of
        :class:`~ctrlsparse.GDA` does before it trains the open weights alone."""
        values = values.detach().to(self.gate.parameter).reshape(self.gate.parameter.shape).clone()
        self.decided = values
        self._z = None
        if isinstance(self.gate.parameter, nn.Parameter):
            self.gate.parameter.requires_grad_(False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # The state of a decided group carries "decided", an undecided one does not: follow it.
        key = prefix + "decided"
        parameter = self.gate.parameter
        if key in state_dict:
            self.decided = torch.empty_like(state_dict[key], device=parameter.device)
        else:
            self.decided = None
        if isinstance(parameter, nn.Parameter):
            parameter.requires_grad_(key not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def current(self) -> torch.Tensor:
        """The gates of the running forward (drawn by the model's pre-hook)."""
        return self._z if self._z is not None else self.resample()

    def modules_touched(self) -> list[str]:
        return list(dict.fromkeys(s.module for s in self.slices))

    def __getstate__(self) -> dict:
        # The running sample holds an autograd graph, which copy.deepcopy cannot copy.
        state = self.__dict__.copy()
        state["_z"] = None
        return state

    def extra_repr(self) -> str:
        aligned = f", round_to={self.round_to}" if self.round_to > 1 else ""
        return f"name={self.name!r}, kind={self.kind!r}, units={self.num_units}{aligned}"


def gate_groups(model: nn.Module) -> list[GateGroup]:
    """The gate groups of a sparsified ``model``, in the order :func:`~ctrlsparse.sparsify` made them.

    Examples:
        >>> gate_groups(nn.Linear(2, 2))
        []
    """
    return list(model.__dict__.get(GROUPS_ATTRIBUTE, []))


def fusable(groups: list[GateGroup]) -> bool:
    """True when every group has stochastic gates of one kind and settings, drawn together."""
    keys = {g.gate.fusion_key() if g.decided is None else None for g in groups}
    return len(groups) > 1 and len(keys) == 1 and None not in keys


def _resample(model: nn.Module, args) -> None:
    groups = model.__dict__[GROUPS_ATTRIBUTE]
    if model.training and fusable(groups) and all(g.training for g in groups):
        for group, sample in zip(groups, type(groups[0].gate).sample_all([g.gate for g in groups])):
            group.resample(sample)
        return
    for group in groups:
        group.resample()


def attach(model: nn.Module, groups: list[GateGroup], sites: list[tuple[GateGroup, Slice]]) -> None:
    """Register each group on its root module, each site as a parametrization, and the sampling hook."""
    modules = dict(model.named_modules())
    for group in groups:
        root = modules[group.name] if group.name else model
        attribute = f"{group.kind}_gate"
        if hasattr(root, attribute):
            raise ValueError(f"module {group.name!r} already has a {attribute!r}; sparsify a model only once")
        root.add_module(attribute, group)
    for group, site in sites:
        module = modules[site.module]
        param = getattr(module, site.param)
        mapping = None
        if site.whole:
            mapping = site.units.to(param.device)
        elif site.dim is not None:
            size = param.shape[site.dim]
            identity = len(site.positions) == size and torch.equal(site.units, torch.arange(size))
            identity = identity and torch.equal(site.positions, torch.arange(size))
            if not identity:
                mapping = torch.full((size,), group.num_units, dtype=torch.long, device=param.device)
                mapping[site.positions.to(param.device)] = site.units.to(param.device)
        plain_linear = type(module) is nn.Linear
        parametrize.register_parametrization(module, site.param, GateScale(group, site.dim, mapping))
        if plain_linear and site.param == "weight" and site.dim == 1:
            module.__dict__[INPUT_SCALE_ATTRIBUTE] = module.parametrizations.weight[-1]
            module.register_forward_pre_hook(_scale_inputs)
            module.register_forward_hook(_unscale_inputs, always_call=True)
    model.__dict__[GROUPS_ATTRIBUTE] = list(groups)
    model.register_forward_pre_hook(_resample)


def _scale_inputs(module: nn.Module, args):
    """Forward pre-hook of a Linear whose columns a gate scales: multiply the input by the
    gates instead of the weight when the input has fewer rows than the layer has outputs
    and its gradient is computed anyway.

    Both give the same outputs and gradients (up to rounding): ``(x · z) Wᵀ = x (W · z)ᵀ``.
    The input path multiplies ``rows × in`` numbers forward and twice backward, the weight
    path ``out × in`` (LeNet-5's fc1 at batch 128: 102k against 400k). An input that needs
    no gradient (the model's own input) stays on the weight path: scaling it would make
    the backward compute its gradient, one more matrix product as large as the forward."""
    (x, *rest) = args
    if not isinstance(x, torch.Tensor) or x.numel() >= module.out_features * x.shape[-1]:
        return None
    if torch.is_grad_enabled() and not x.requires_grad:
        return None
    scale = module.__dict__[INPUT_SCALE_ATTRIBUTE]
    scale.on_input = True
    return (x * scale.along().to(x.dtype), *rest)


def _unscale_inputs(module: nn.Module, args, output):
    """Forward hook (also after an error): the weight is gated again outside the forward."""
    module.__dict__[INPUT_SCALE_ATTRIBUTE].on_input = False


def remove_input_scaling(model: nn.Module) -> None:
    """Every gate on a Linear's columns multiplies the weight again, in every forward (what
    :func:`bake` does before folding the gates; benchmarks use it to compare the two paths)."""
    for module in model.modules():
        if vars(module).pop(INPUT_SCALE_ATTRIBUTE, None) is None:
            continue
        for hooks, hook in (
            (module._forward_pre_hooks, _scale_inputs),
            (module._forward_hooks, _unscale_inputs),
        ):
            for key in [k for k, h in hooks.items() if h is hook]:
                del hooks[key]
                module._forward_hooks_always_called.pop(key, None)


@torch.no_grad()
def bake(model: nn.Module) -> None:
    """Fold the test-time gates (eq. 13) into the weights and remove every gate (in place)."""
    groups = gate_groups(model)
    for group in groups:
        group.eval()
        group.live = None
        group._z = group.deterministic()
    for module in model.modules():  # layers skipping dead units (gating/skipping.py) compute in full
        if vars(module).pop(SKIP_ATTRIBUTE, None) is not None:
            del module.forward
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
            # Not parametrize.remove_parametrizations: it edits the class parametrize injected,
            # which a deepcopy shares with the original model, and would break the original.
            del module._modules["parametrizations"]
            module.__class__ = type(module).__bases__[0]
            for name, value in values.items():
                module.register_parameter(name, nn.Parameter(value))
    modules = dict(model.named_modules())
    for group in groups:
        root = modules[group.name] if group.name else model
        delattr(root, f"{group.kind}_gate")
    del model.__dict__[GROUPS_ATTRIBUTE]
    model.__dict__.pop(EXAMPLE_ATTRIBUTE, None)
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is _resample:
            del model._forward_pre_hooks[key]
    remove_input_scaling(model)
