"""Whether the targets of a problem can be reached together, and the granularity of a landing.

With neuron or channel units a layer's density is (about) the product of the open
fractions of its input and output units, and a layer's density and MACs share its gates:
targets on coupled constraints limit each other. ``problem`` below is a
:class:`~ctrlsparse.SparsityProblem`.
"""

from __future__ import annotations

import torch


def unit_share(problem, name: str) -> float:
    """The most one unit can change constraint ``name``'s value when every unit is open:
    the granularity a landing on ε can be judged at (a 16-channel layer moves in 1/16ths)."""
    units = problem.constraint_units()[name]
    ones = torch.ones(sum(g.num_units for g in problem.groups))
    with torch.no_grad():
        full = float(problem.constraint_values(units=ones)[name])
        share = 0.0
        starts = set(problem.accounting.offsets)
        for unit in units.tolist():
            if unit in starts:  # one unit of each group that counts in it
                trial = ones.clone()
                trial[unit] = 0.0
                share = max(share, full - float(problem.constraint_values(units=trial)[name]))
    return share


def check_jointly_reachable(problem, iterations: int = 300) -> None:
    """Refuse targets that units shared between layers make impossible to reach together.

    With neuron or channel units a layer's density is (about) the product of the open
    fractions of its input and output units, so per-layer targets on consecutive layers
    constrain each other: ε = 0.5 on a layer whose outputs feed the last layer, which is
    held at 0.3, cannot be reached. This searches, over every group's open fraction,
    for a point where each target constraint sits within max(0.01, 2 units' share) of its
    ε, and raises naming the constraints it cannot reach.
    """
    targets = problem.targets_all
    logits = torch.full((len(problem.groups),), 4.0, requires_grad=True)
    sizes = torch.tensor([g.num_units for g in problem.groups])
    eps = torch.tensor(list(targets.values()))
    optimizer = torch.optim.Adam([logits], lr=0.1)
    for _ in range(iterations):
        units = torch.repeat_interleave(torch.sigmoid(logits), sizes)
        values = problem.constraint_values(units=units)
        gap = torch.stack([values[n] for n in targets]) - eps
        loss = (gap**2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        units = torch.repeat_interleave(torch.sigmoid(logits), sizes)
        values = {n: float(v) for n, v in problem.constraint_values(units=units).items()}
    unreachable = {
        n: values[n] for n, e in targets.items() if abs(values[n] - e) > max(0.01, 2 * problem.unit_share(n))
    }
    if unreachable:
        shared = problem.constraint_units()
        described = []
        for name, value in unreachable.items():
            members = set(shared[name].tolist())
            coupled = [other for other in targets if other != name and members & set(shared[other].tolist())]
            described.append(
                f"{name!r} (ε = {targets[name]}, closest joint solution: {value:.3f}; "
                f"shares units with {', '.join(map(repr, coupled)) or 'none'})"
            )
        raise ValueError(
            "these targets cannot all be reached together, because they count the same units (a "
            "unit's output channel is the next layer's input; density and MACs of a layer share its "
            "gates): " + "; ".join(described) + ". Loosen or drop one of the coupled targets, or use "
            "structure='paper' (per-layer units)"
        )
