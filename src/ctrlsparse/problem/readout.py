"""The one host transfer of a GDA step: the numbers it logs, checked before the update."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ctrlsparse.errors import NonFiniteLossError
from ctrlsparse.runs.records import GDAStep


class StepReader:
    """Every logged scalar of a GDA step in one host transfer, before its update.

    Built once per GDA: the names, the multipliers' parameters and the positions of each
    number in the transferred vector are fixed with the problem, so each step runs only the
    transfer and the check. That matters more than it looks: right after the backward pass
    every line of Python runs several times slower than in a warm loop (docs/performance.md,
    "Against the reference implementation").

    Under a process group the loss is the ranks' mean (one all-reduce; a NaN on any rank
    makes it NaN, so every rank stops at the same step).
    """

    def __init__(self, problem) -> None:
        constraints = list(problem.constraints())
        self.names = problem.stacking.stacked_names
        self.order = list(problem.constraint_names)
        self.layer_names = list(problem.accounting.layers)
        # cooper's projection swaps a multiplier's data, never the parameter: read through it.
        self.multipliers = [constraint.multiplier.weight for constraint in constraints]
        self.constraints = constraints
        n_layers, n_constraints = len(self.layer_names), len(self.names)
        self._multipliers = slice(2 + n_layers, 2 + n_layers + n_constraints)
        self._violations = slice(2 + n_layers + n_constraints, 2 + n_layers + 2 * n_constraints)
        self._macs = 2 + n_layers + 2 * n_constraints

    def __call__(self, cmp_state, levels: dict[str, float], step: int) -> GDAStep:
        """The step's numbers from cooper's CMP state.

        Raises:
            NonFiniteLossError: the loss or a violation is NaN/inf; the caller has not updated
                any parameter or multiplier yet.
        """
        misc = cmp_state.misc
        density = misc["density"]
        observed = misc["loss"] is not None  # None: backpropagated by someone who did not show it to GDA
        loss = misc["loss"].detach().reshape(1).to(density) if observed else density.new_full((1,), math.nan)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # The global batch's mean loss; a NaN on any rank makes it NaN, so every rank stops.
            loss = loss.clone()
            dist.all_reduce(loss)
            loss = loss / dist.get_world_size()
        states = cmp_state.observed_constraints
        parts = [
            loss,
            density.reshape(1),
            misc["layer_densities"].detach(),  # the layers' densities in layer_names' order
            *[weight.detach() for weight in self.multipliers],
            *[states[constraint].violation.detach() for constraint in self.constraints],
        ]
        macs = misc.get("macs", {})
        if macs:
            parts.append(torch.stack([v.detach() for v in macs.values()]))
        values = torch.cat(parts).tolist()  # the step's one host transfer
        violations = values[self._violations]
        if (observed and not math.isfinite(values[0])) or not all(map(math.isfinite, violations)):
            checked = [values[0] if observed else 0.0, *violations]
            bad = [n for n, v in zip(["loss", *self.names], checked) if not math.isfinite(v)]
            raise NonFiniteLossError(
                f"{', '.join(bad)} became {checked[0] if 'loss' in bad else 'non-finite'} at step "
                f"{step}; the step was not applied (no parameter or multiplier changed)"
            )
        multipliers = dict(zip(self.names, values[self._multipliers]))
        violations = dict(zip(self.names, violations))
        return GDAStep(
            loss=values[0],
            density=values[1],
            densities=dict(zip(self.layer_names, values[2 : self._multipliers.start])),
            multipliers={name: multipliers[name] for name in self.order},
            violations={name: violations[name] for name in self.order},
            levels=levels,
            macs=dict(zip(macs, values[self._macs :])),
        )
