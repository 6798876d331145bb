"""The layout of multipliers that ctrlsparse saved before it stacked its constraints.

Until commit bbe3fe8 every target and every penalty of a :class:`SparsityProblem` was its own
cooper constraint, with a one-entry multiplier and one dual-optimizer state each, keyed by the
constraint's name. Now every target is one entry of the ``"constrained"`` constraint and
every penalty one of ``"penalized"``. These functions regroup a state saved the old way, so
checkpoints written before still resume.
"""

from __future__ import annotations

import torch


def regroup_multipliers(state_dict: dict, problem) -> dict:
    """``problem``'s ``state_dict`` layout from either layout: stacked (returned as it is) or
    one cooper constraint per name, as ctrlsparse saved it before the constraints were stacked.

    Raises:
        ValueError: a name is neither a constraint of ``problem`` nor one of its cooper
            constraints (the message lists both).
    """
    if not problem.per_name_layout(state_dict):
        return state_dict
    slots = {name: (kind, i) for kind, names in problem.members.items() for i, name in enumerate(names)}
    saved = set(state_dict.get("multipliers", {})) | set(state_dict.get("penalty_coefficients", {}))
    unknown = sorted(saved - set(slots))
    if unknown:
        raise ValueError(
            f"the saved multipliers name {', '.join(map(repr, unknown))}; this problem's constraints are "
            f"{', '.join(problem.constraint_names)}"
        )
    regrouped: dict[str, dict] = {}
    for part, owners in (("multipliers", problem.named_multipliers()),
                         ("penalty_coefficients", problem.named_penalty_coefficients())):  # fmt: skip
        current = {kind: owner.state_dict() for kind, owner in owners}
        merged = {kind: {key: value.detach().clone() for key, value in entries.items()}
                  for kind, entries in current.items()}  # fmt: skip
        for name, entries in state_dict.get(part, {}).items():
            kind, index = slots[name]
            if kind not in merged:
                raise ValueError(f"the saved {part} hold {name!r}, which has none in this problem")
            for key, value in entries.items():
                merged[kind][key][index] = value.reshape(())
        regrouped[part] = merged
    return regrouped


def regroup_dual_state(state: dict, problem) -> dict:
    """The dual optimizer's ``state_dict`` for ``problem``'s stacked multipliers from one saved
    with one multiplier per constraint name, as ctrlsparse saved it before the constraints
    were stacked (the caller knows the layout from the saved multipliers' names). Each
    stacked multiplier's state is its names' states side by side; a 0-d entry (Adam's step
    count) is the same for all of them.
    """
    members = list(problem.members.values())
    groups = state["param_groups"]
    saved = [index for group in groups for index in group["params"]]
    if len(groups) != 1 or len(saved) != len(problem.constraint_names):
        return state  # not a state of this problem: the optimizer's own check speaks
    position = {name: index for name, index in zip(problem.constraint_names, saved)}
    regrouped = {}
    for new_index, names in enumerate(members):
        old = [state["state"].get(position[name]) for name in names]
        present = [entry for entry in old if entry]
        if not present:  # a multiplier the optimizer never stepped (a penalty's)
            continue
        entry = {}
        for key, value in present[0].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                parts = [o[key] if o else torch.zeros_like(value) for o in old]
                entry[key] = torch.cat([part.reshape(-1) for part in parts])
            else:
                entry[key] = value
        regrouped[new_index] = entry
    return {"state": regrouped, "param_groups": [{**groups[0], "params": list(range(len(members)))}]}
