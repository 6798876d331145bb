"""Training: the loop (:func:`fit`, :func:`evaluate`), its parts (:func:`start_feasibility_phase`,
:class:`~ctrlsparse.training.resume.Checkpointer`, :class:`~ctrlsparse.training.monitor.Monitor`)
and the other methods' trainers.

:class:`~ctrlsparse.problem.GDA` is the trainer for gated models;
:class:`~ctrlsparse.training.methods.L1RDA` and
:class:`~ctrlsparse.training.methods.MagnitudePruning` train plain models with the same loop.
Language models: :mod:`ctrlsparse.training.lm` (next-token loss, distillation, perplexity).
The accuracy–density front from one run: :class:`~ctrlsparse.training.path.DensityPath`.
"""

from ctrlsparse.training.group_magnitude import GroupMagnitudePruning
from ctrlsparse.training.lm import Distillation, distillation_loss, next_token_loss, perplexity
from ctrlsparse.training.methods import L1RDA, MagnitudePruning, plain_layers
from ctrlsparse.training.path import DensityPath, PathPoint
from ctrlsparse.training.rda import RDA
from ctrlsparse.training.trainer import NonFiniteLossError, Trainer, evaluate, fit, start_feasibility_phase

__all__ = [
    "DensityPath",
    "Distillation",
    "GroupMagnitudePruning",
    "L1RDA",
    "RDA",
    "MagnitudePruning",
    "NonFiniteLossError",
    "PathPoint",
    "Trainer",
    "distillation_loss",
    "evaluate",
    "fit",
    "next_token_loss",
    "perplexity",
    "plain_layers",
    "start_feasibility_phase",
]
