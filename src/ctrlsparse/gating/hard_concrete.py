"""Hard concrete gates (Louizos, Welling & Kingma, 2018, section 2.2): exact zeros and a
closed-form P(z != 0), so the expected L0 norm is differentiable (eq. 12)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ctrlsparse.gating.gate import Gate

# Settings of Louizos et al. (2018), section 4: beta = 2/3, (gamma, zeta) = (-0.1, 1.1).
TEMPERATURE = 2.0 / 3.0
STRETCH = (-0.1, 1.1)
# log_alpha is clamped into this range after every primal step: beyond it P(active)
# saturates (sigmoid(+-8.4)) and Adam's normalised steps would push it without bound.
LOG_ALPHA_RANGE = (-10.0, 10.0)
# Keeps logit(u) finite when sampling u ~ U(0, 1).
_EPS = 1e-6


class HardConcrete(Gate):
    r"""A tensor of independent hard concrete gates.

    Training mode samples (eq. 10–11)

    .. math::
        u \sim \mathcal U(0,1),\quad s = \sigma\big((\log u - \log(1-u) + \log\alpha)/\beta\big),
        \quad z = \min(1, \max(0, s(\zeta-\gamma)+\gamma)),

    one sample per call (so one per minibatch when a layer calls it once per forward).
    Eval mode returns the deterministic test-time gate (eq. 13)
    :math:`\hat z = \min(1, \max(0, \sigma(\log\alpha)(\zeta-\gamma)+\gamma))`.

    With ``block`` N > 1 (``sparsify(round_to=N, block_gates=True)``), consecutive units
    share one gate: units ``kN .. kN+N-1`` of a 1-D gate tensor open and close together,
    so a layer keeps its units in whole blocks of N (the last block of a layer whose size
    is not a multiple holds the rest). A block's gate reads the mean of its units'
    ``log_alpha``: each unit keeps its own entry, so the parameter, the state dict and
    the feasibility phase see one value per unit, and every unit of a block gets the same
    gradient.

    Args:
        shape: shape of the gate tensor (``(n_groups,)`` for neuron gates, the weight's
            shape for weight gates).
        drop_rate: initial probability of a gate being dropped; ``log_alpha`` starts at
            ``log((1 - drop_rate) / drop_rate)`` plus N(0, 0.01²) noise (section 4).
        temperature: :math:`\beta`.
        stretch: :math:`(\gamma, \zeta)` with :math:`\gamma < 0` and :math:`\zeta > 1`.
        block: units per gate (1-D gate tensors only); 1: one gate per unit.

    Examples:
        >>> gate = HardConcrete((4,), drop_rate=0.5)
        >>> z = gate()  # a sample in [0, 1]^4 with exact zeros and ones
        >>> gate.prob_active().shape
        torch.Size([4])
        >>> blocks = HardConcrete((6,), drop_rate=0.5, block=4)
        >>> z = blocks.sample()
        >>> bool((z[:4] == z[0]).all() and (z[4:] == z[4]).all())
        True
    """

    parameter_range = LOG_ALPHA_RANGE
    method = "hard_concrete"

    def __init__(
        self,
        shape: tuple[int, ...] | int,
        drop_rate: float = 0.5,
        temperature: float = TEMPERATURE,
        stretch: tuple[float, float] = STRETCH,
        block: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 < drop_rate < 1.0:
            raise ValueError(f"drop_rate must lie in (0, 1), got {drop_rate!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        gamma, zeta = stretch
        if not (gamma < 0.0 and zeta > 1.0):
            raise ValueError(f"stretch (gamma, zeta) needs gamma < 0 < 1 < zeta, got {stretch!r}")
        self.drop_rate = drop_rate
        self.temperature = temperature
        self.gamma, self.zeta = float(gamma), float(zeta)
        # Constant shift of eq. 12: P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)).
        self._prob_shift = temperature * math.log(-self.gamma / self.zeta)
        self.log_alpha = nn.Parameter(torch.empty(shape))
        self._block = 1
        self.block = block
        self.reset_parameters()

    @property
    def block(self) -> int:
        """Units per gate (1: one gate per unit). A value above 1 is saved in the state dict
        (``block_units``), and loading a state saved with another block size is refused."""
        return self._block

    @block.setter
    def block(self, block: int) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be an integer >= 1 (units per gate), got {block!r}")
        if block > 1 and self.log_alpha.dim() != 1:
            raise ValueError(
                f"block={block} groups units of a 1-D gate tensor; got shape {tuple(self.log_alpha.shape)}"
            )
        self._block = block
        if block > 1:
            self.register_buffer("block_units", torch.tensor(block, device=self.log_alpha.device))
        elif "block_units" in self._buffers:
            del self._buffers["block_units"]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        saved = state_dict.get(prefix + "block_units")
        if saved is not None and int(saved) != self._block:
            errors.append(
                f"{prefix}block_units: the state was saved with one gate per block of {int(saved)} units, "
                f"this model has {self._block} (sparsify with the same round_to and block_gates)"
            )
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def reset_parameters(self) -> None:
        """Re-draw ``log_alpha`` around the value that keeps a gate with ``1 - drop_rate``."""
        mean = math.log(1.0 - self.drop_rate) - math.log(self.drop_rate)
        with torch.no_grad():
            self.log_alpha.normal_(mean, 1e-2)

    def _blocks(self, per_unit: torch.Tensor) -> torch.Tensor:
        """The mean of each block's units (``block`` consecutive entries; the last block may be short)."""
        if self.block == 1:
            return per_unit
        n, size = per_unit.numel(), self.block
        full = n // size * size
        means = per_unit[:full].view(-1, size).mean(1)
        return means if full == n else torch.cat([means, per_unit[full:].mean().view(1)])

    def _units(self, per_block: torch.Tensor) -> torch.Tensor:
        """Each block's value repeated over its units."""
        if self.block == 1:
            return per_block
        return per_block.repeat_interleave(self.block)[: self.log_alpha.numel()]

    def prob_active(self) -> torch.Tensor:
        """P(z != 0) per gate, eq. 12 — differentiable in ``log_alpha``."""
        return self._units(torch.sigmoid(self._blocks(self.log_alpha) - self._prob_shift))

    def sample(self) -> torch.Tensor:
        """A reparameterized hard concrete sample, eq. 10–11 (one per block)."""
        return self._units(self._sample(self._blocks(self.log_alpha)))

    def _sample(self, log_alpha: torch.Tensor) -> torch.Tensor:
        # logit(u) = log u - log(1 - u), with u clamped into [eps, 1 - eps]: one kernel.
        noise = torch.logit(torch.rand_like(log_alpha), eps=_EPS)
        s = torch.sigmoid((noise + log_alpha) / self.temperature)
        return torch.add(self.gamma, s, alpha=self.zeta - self.gamma).clamp_(0.0, 1.0)

    def fusion_key(self) -> tuple:
        """Gates with equal keys draw their samples and P(z != 0) together
        (:func:`~ctrlsparse.gating.groups.fusable`)."""
        parameter = self.log_alpha
        return (HardConcrete, self.temperature, self.gamma, self.zeta, parameter.dtype, parameter.device)

    @staticmethod
    def sample_all(gates: list[HardConcrete]) -> list[torch.Tensor]:
        """One sample of each gate (eq. 10–11), drawn in one pass over their concatenated
        ``log_alpha``: a few kernels for a whole model instead of a few per gate tensor.
        The gates must share a :meth:`fusion_key`."""
        if all(g.block == 1 for g in gates):
            flat = torch.cat([g.log_alpha.reshape(-1) for g in gates])
            parts = gates[0]._sample(flat).split([g.log_alpha.numel() for g in gates])
            return [part.view(g.log_alpha.shape) for part, g in zip(parts, gates)]
        flat = torch.cat([g._blocks(g.log_alpha.reshape(-1)) for g in gates])
        parts = gates[0]._sample(flat).split([g._num_blocks() for g in gates])
        return [g._units(part).view(g.log_alpha.shape) for part, g in zip(parts, gates)]

    def _num_blocks(self) -> int:
        return -(-self.log_alpha.numel() // self.block)

    @staticmethod
    def prob_active_all(gates: list[HardConcrete]) -> torch.Tensor:
        """Every gate's P(z != 0) (eq. 12), flattened and concatenated in order, in one pass.
        The gates must share a :meth:`fusion_key`."""
        if all(g.block == 1 for g in gates):
            flat = torch.cat([g.log_alpha.reshape(-1) for g in gates])
            return torch.sigmoid(flat - gates[0]._prob_shift)
        flat = torch.cat([g._blocks(g.log_alpha.reshape(-1)) for g in gates])
        parts = torch.sigmoid(flat - gates[0]._prob_shift).split([g._num_blocks() for g in gates])
        return torch.cat([g._units(p) for p, g in zip(parts, gates)])

    def deterministic(self) -> torch.Tensor:
        """The test-time gate, eq. 13 (one per block)."""
        log_alpha = self._blocks(self.log_alpha)
        return self._units((torch.sigmoid(log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0))

    @property
    def parameter(self) -> nn.Parameter:
        return self.log_alpha

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.log_alpha.shape)}, drop_rate={self.drop_rate}, "
            f"temperature={self.temperature:.4g}, stretch=({self.gamma}, {self.zeta})"
            + (f", block={self.block}" if self.block > 1 else "")
        )
