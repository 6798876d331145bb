"""The one host transfer of a GDA step: the numbers it logs, checked before the update."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ctrlsparse.errors import NonFiniteLossError
from ctrlsparse.runs.records import GDAStep


def read_step(problem, cmp_state, levels: dict[str, float], step: int) -> GDAStep:
    """Every logged scalar of GDA's ``step``-th step in one host transfer, before its update.

    Under a process group the loss is the ranks' mean (one all-reduce; a NaN on any rank
    makes it NaN, so every rank stops at the same step).

    Raises:
        NonFiniteLossError: the loss or a violation is NaN/inf; the caller has not updated
            any parameter or multiplier yet.
    """
    misc = cmp_state.misc
    names = problem.stacking.stacked_names
    constraints = list(problem.constraints())
    layer_names = list(misc["densities"])
    macs = misc.get("macs", {})
    observed = misc["loss"] is not None  # None: backpropagated by someone who did not show it to GDA
    loss = (
        misc["loss"].detach().reshape(1).to(misc["density"])
        if observed
        else misc["density"].new_full((1,), math.nan)
    )
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # The global batch's mean loss; a NaN on any rank makes it NaN, so every rank stops.
        loss = loss.clone()
        dist.all_reduce(loss)
        loss = loss / dist.get_world_size()
    parts = [
        loss,
        misc["density"].reshape(1),
        misc["layer_densities"].detach(),  # the layers' densities in layer_names' order
        *[c.multiplier.weight.detach() for c in constraints],
        *[cmp_state.observed_constraints[c].violation.detach() for c in constraints],
    ]
    if macs:
        parts.append(torch.stack([v.detach() for v in macs.values()]))
    values = torch.cat(parts).tolist()  # the step's one host transfer
    n_layers, n_constraints = len(layer_names), len(names)
    checked = [
        values[0] if observed else 0.0,
        *values[2 + n_layers + n_constraints : 2 + n_layers + 2 * n_constraints],
    ]
    if not all(math.isfinite(v) for v in checked):
        bad = [n for n, v in zip(["loss", *names], checked) if not math.isfinite(v)]
        raise NonFiniteLossError(
            f"{', '.join(bad)} became {checked[0] if 'loss' in bad else 'non-finite'} at step "
            f"{step}; the step was not applied (no parameter or multiplier changed)"
        )
    densities = values[2 : 2 + n_layers]
    multipliers = dict(zip(names, values[2 + n_layers : 2 + n_layers + n_constraints]))
    violations = dict(zip(names, values[2 + n_layers + n_constraints : 2 + n_layers + 2 * n_constraints]))
    order = problem.constraint_names
    return GDAStep(
        loss=values[0],
        density=values[1],
        densities=dict(zip(layer_names, densities)),
        multipliers={name: multipliers[name] for name in order},
        violations={name: violations[name] for name in order},
        levels=levels,
        macs=dict(zip(macs, values[2 + n_layers + 2 * n_constraints :])),
    )
