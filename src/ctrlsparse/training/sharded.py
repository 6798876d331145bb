"""Checkpoints of a GDA run whose model is sharded with FSDP2, through
``torch.distributed.checkpoint`` (DCP): every rank writes and reads its own shards.

A checkpoint holds the model (sharded weights, whole gates), the primal optimizer's state
(sharded like the weights) and the rest of :meth:`GDA.state_dict <ctrlsparse.GDA.state_dict>`
(multipliers, dual optimizer, levels, schedule, feasibility decision, step counter), which
is identical on every rank and stored once. The launch on several nodes is in docs/scale.md.

Examples:
    >>> save(gda, "ckpt/step-1000")  # every rank calls it  # doctest: +SKIP
    >>> load(gda, "ckpt/step-1000")  # a GDA built like the one that saved it  # doctest: +SKIP
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ctrlsparse.problem.gda import GDA


def _template(gda: GDA) -> dict:
    model, optimizer = get_state_dict(gda.model, gda.primal_optimizer)
    return {"model": model, "optimizer": optimizer, "gda": io.BytesIO()}


def save(gda: GDA, path: str | Path) -> None:
    """Write the run's sharded checkpoint to the directory ``path`` (a collective: every rank calls it)."""
    state = _template(gda)
    rest = {k: v for k, v in gda.state_dict().items() if k != "primal_optimizer"}
    torch.save(rest, state["gda"])  # one opaque entry: the same on every rank, stored once
    dcp.save(state, checkpoint_id=str(path))


def load(gda: GDA, path: str | Path) -> None:
    """Continue from :func:`save`'s checkpoint in ``path``; ``gda`` is built like the one that
    saved it, on a model sharded the same way (a collective: every rank calls it)."""
    state = _template(gda)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(gda.model, gda.primal_optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])  # fmt: skip
    state["gda"].seek(0)
    rest = torch.load(state["gda"], weights_only=True)
    gda.load_state_dict({**rest, "primal_optimizer": gda.primal_optimizer.state_dict()})
