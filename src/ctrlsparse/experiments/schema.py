"""The schema of a problem file: one dataclass per TOML section, with each key's types and choices.

:mod:`ctrlsparse.experiments.config` reads and checks a file against it;
``ProblemConfig.to_dict()`` is what a run records in ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ctrlsparse.data.tokenizer import TOKENIZERS
from ctrlsparse.gating.gates import ARM_SCALE, Estimator, GateKind, Squash
from ctrlsparse.gating.sparsify import Structure
from ctrlsparse.problem.dual import DUAL_OPTIMIZERS
from ctrlsparse.problem.gda import DEFAULT_PRIMAL_LR
from ctrlsparse.problem.horizon import DEFAULT_FEASIBILITY
from ctrlsparse.problem.schedules import DEFAULT_RAMP, ScheduleKind

DEFAULT_VOCAB = 4096
"""``[data] vocab_size`` of a text corpus's BPE when unset."""
SYNTHETIC = "synthetic"
"""``[data] name`` of generated data (:func:`ctrlsparse.data.synthetic`), for any model."""
NUMBER = (int, float)
LEVELS = (int, float, list, dict)
PRIMAL_OPTIMIZERS = ("adam", "sgd")
METHODS = ("l0", "l1_rda", "magnitude")
"""[sparsity] method: gated expected-L0 problem (hard concrete or ARM gates), ℓ1-RDA, magnitude pruning."""


def _field(default: Any, types: tuple[type, ...], choices: tuple[str, ...] | None = None) -> Any:
    meta = {"types": types, "choices": choices}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


AUGMENTATIONS = ("none", "crop_flip")
"""[data] augment: none, or CIFAR's random crop (zero padding 4) and horizontal flip."""


@dataclass
class DataConfig:
    """``[data]``: a registered data set, a text corpus (``name = "python_docs"``: next-token
    windows for a language model, docs/howto/language-models.md), or ``name = "synthetic"``."""

    name: str = _field("digits", (str,))
    root: str | None = _field(None, (str,))
    download: bool = _field(False, (bool,))
    augment: str = _field("none", (str,), AUGMENTATIONS)
    # name = "synthetic": images of this shape, or token ids (shape = [length]) with vocab_size.
    shape: list[int] = _field([1, 28, 28], (list,))
    num_classes: int = _field(10, (int,))
    train_size: int = _field(1024, (int,))
    test_size: int = _field(256, (int,))
    vocab_size: int | None = _field(None, (int,))
    # A text corpus (name = "python_docs"): windows of seq_len tokens, tokenized by a byte-level
    # BPE of vocab_size tokens (unset: 4096, DEFAULT_VOCAB) trained on it, or by UTF-8 bytes.
    seq_len: int = _field(128, (int,))
    tokenizer: str = _field("bpe", (str,), TOKENIZERS)


@dataclass
class ModelConfig:
    """``[model]``: a registered model (``name``) or your own (``factory = "package.module:function"``,
    called with ``kwargs``; its module is imported from ``factory_dir`` first, by default the
    problem file's folder, a relative one read from there); ``input_shape`` overrides the
    data's for tracing; ``output`` names the attribute or key of the model's output that
    holds the logits (e.g. ``"logits"``); ``include``/``exclude`` select the root
    modules of the gated units (fnmatch patterns); for a decoder LM, ``gate_hidden`` also
    gates the hidden (residual) dimension, ``gate_layers`` whole decoder layers and
    ``gate_blocks`` whole attention and MLP blocks (:func:`~ctrlsparse.sparsify`'s
    ``hidden``, ``layers`` and ``blocks``)."""

    name: str = _field("mlp", (str,))
    hidden: list[int] = _field([300, 100], (list,))
    factory: str | None = _field(None, (str,))
    factory_dir: str | None = _field(None, (str,))
    kwargs: dict = _field({}, (dict,))
    input_shape: list[int] | None = _field(None, (list,))
    output: str | None = _field(None, (str,))
    include: list[str] | None = _field(None, (list,))
    exclude: list[str] = _field([], (list,))
    heads: bool = _field(True, (bool,))
    gate_hidden: bool = _field(False, (bool,))
    gate_layers: bool = _field(False, (bool,))
    gate_blocks: bool = _field(False, (bool,))
    structure: str = _field("neuron", (str,), tuple(s.value for s in Structure))
    round_to: int = _field(1, (int,))
    """Keep the open channels, neurons and hidden dimensions of each gated layer in multiples of
    this (8 or 16: the channel blocks of CPU and GPU kernels), or all of them; heads stay whole
    units. The feasibility phase rounds its decision to such counts, and purge pads undecided
    gates with zeroed units to them (sparsify's round_to; docs/howto/purge-export.md). 1: no
    rounding."""
    block_gates: bool = _field(False, (bool,))
    """With round_to N > 1: one hard concrete gate per block of N units of each aligned group,
    instead of one gate per unit rounded at the decision (sparsify's block_gates)."""
    drop_rate: float = _field(0.5, NUMBER)
    gates: str = _field("hard_concrete", (str,), tuple(k.value for k in GateKind))
    arm_k: float = _field(ARM_SCALE, NUMBER)
    arm_squash: str = _field("sigmoid", (str,), tuple(k.value for k in Squash))
    arm_estimator: str = _field("arm", (str,), tuple(k.value for k in Estimator))
    # The weights the plain model starts from: a run directory (its model.pt) or a state dict
    # file, e.g. the dense run a pruning run starts from (and distills from, [train] distill_weight).
    init: str | None = _field(None, (str,))


@dataclass
class SparsityConfig:
    """``[sparsity]``: what to bound (densities, MACs) or penalize, and the feasibility phase
    (the last ``feasibility`` fraction of the run; ``false`` or 0 turns it off). A decoder LM
    may state a parameter budget instead (``target_params``: a fraction of all parameters, or
    a count such as ``"1.3e9"``) or a target shape (``target_shape = { heads = 2,
    intermediate = 256 }``), as :class:`~ctrlsparse.SparsityProblem` takes them."""

    method: str = _field("l0", (str,), METHODS)
    target_density: float | list | dict | None = _field(None, LEVELS)
    penalty: float | list | dict | None = _field(None, LEVELS)
    target_macs: float | list | dict | None = _field(None, LEVELS)
    macs_penalty: float | list | dict | None = _field(None, LEVELS)
    target_params: float | str | None = _field(None, (int, float, str))
    target_shape: dict | None = _field(None, (dict,))
    feasibility: float | bool = _field(DEFAULT_FEASIBILITY, (int, float, bool))
    weight_decay: float = _field(0.0, NUMBER)
    finetune_epochs: int = _field(0, (int,))


@dataclass
class OptimConfig:
    """``[optim]``: unset ``gate_lr`` and ``dual_lr`` take :class:`~ctrlsparse.GDA`'s defaults,
    which scale with the run's length (Adam ascent at ``40 / steps``, gates at least at
    ``30 / steps``; docs/control.md)."""

    primal: str = _field("adam", (str,), PRIMAL_OPTIMIZERS)
    primal_lr: float = _field(DEFAULT_PRIMAL_LR, NUMBER)
    gate_lr: float | None = _field(None, NUMBER)
    dual_lr: float | None = _field(None, NUMBER)
    dual_restarts: bool = _field(True, (bool,))
    dual_optimizer: str = _field("adam", (str,), DUAL_OPTIMIZERS)
    dual_kp: float = _field(0.0, NUMBER)
    dual_ema_nu: float = _field(0.0, NUMBER)
    alternating: bool = _field(False, (bool,))
    # SGD's momentum and the weights' (not the gates') weight decay in the primal optimizer.
    primal_momentum: float = _field(0.9, NUMBER)
    primal_weight_decay: float = _field(0.0, NUMBER)
    # Multiply the primal learning rates by lr_gamma at each of these epochs (MultiStepLR).
    lr_milestones: list[int] = _field([], (list,))
    lr_gamma: float = _field(0.1, NUMBER)
    augmented_lagrangian: float | None = _field(None, NUMBER)
    rda_gamma: float = _field(1.0, NUMBER)


@dataclass
class ScheduleConfig:
    """``[schedule]``: by default the target ramps linearly from the initial density to ε over
    the first ``fraction`` (a third) of the run's steps, or over ``epochs`` epochs when set
    (docs/dynamics.md, docs/control.md); ``kind = "fixed"`` asks for ε from the first step."""

    kind: str = _field("linear", (str,), tuple(k.value for k in ScheduleKind))
    epochs: int | None = _field(None, (int,))
    factor: float = _field(0.8, NUMBER)
    fraction: float = _field(DEFAULT_RAMP, NUMBER)


@dataclass
class TrainConfig:
    epochs: int = _field(200, (int,))
    batch_size: int = _field(128, (int,))
    seed: int = _field(0, (int,))
    log_every: int = _field(1, (int,))
    device: str = _field("cpu", (str,))
    compile: bool | str = _field(False, (bool, str))
    """``true``: run the model's forward through ``torch.compile`` (``GDA(..., compile=True)``);
    ``"step"``: compile the step's forward, backward and Lagrangian, the updates eager
    (``GDA(..., compile="step")``); eager with a warning where the compiler fails."""
    skip_below: float | None = _field(None, NUMBER)
    """Skip units with P(z != 0) below this in Linear/Conv2d layers (``GDA(..., skip_below=...)``)."""
    world_size: int = _field(1, (int,))
    """Processes the run trains in: set by ``ctrlsparse run`` under torchrun and recorded in
    ``config.json`` (a resumed run must use as many). ``batch_size`` is the global batch."""
    distill_weight: float = _field(0.0, NUMBER)
    """α of ``distillation_loss`` (``ctrlsparse.training.lm``): mix in the KL divergence from the
    dense model (the model as ``[model] init`` loads it, before gating); 0 turns it off."""
    distill_temperature: float = _field(2.0, NUMBER)


@dataclass
class ProblemConfig:
    """A parsed problem file. ``to_dict()`` is what a run records in ``config.json``.

    Examples:
        >>> config = ProblemConfig(name="toy", train=TrainConfig(epochs=3))
        >>> config.to_dict()["train"]["epochs"], config.model.structure
        (3, 'neuron')
    """

    name: str
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "sparsity": SparsityConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}
