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


def _values(problem, fractions: torch.Tensor) -> torch.Tensor:
    sizes = torch.tensor([g.num_units for g in problem.groups])
    values = problem.constraint_values(units=torch.repeat_interleave(fractions, sizes))
    return torch.stack([values[n] for n in problem.targets_all])


def _uniform_start(problem, eps: torch.Tensor) -> torch.Tensor:
    """The largest common open fraction t (every group open by t) at which every target holds:
    every constraint value grows with every open fraction, so bisection finds it."""
    low, high = 0.0, 1.0
    ones = torch.ones(len(problem.groups))
    with torch.no_grad():
        for _ in range(20):
            mid = (low + high) / 2
            if bool((_values(problem, mid * ones) <= eps).all()):
                low = mid
            else:
                high = mid
    return low * ones


def joint_landing(problem, iterations: int = 300, start: torch.Tensor | None = None) -> torch.Tensor:
    """The open fraction of every group at the highest values that keep each target constraint
    at or below its ε: what the targets allow together.

    Every ε is an upper bound. With neuron or channel units a layer's density is (about) the
    product of the open fractions of its input and output units, so a loose cap beside a
    tighter one (``{"model": 0.3, "*": 0.9}``) cannot be met with equality, and need not be:
    it is satisfied anywhere below. From ``start`` (by default the largest common fraction at
    which every target holds), projected Adam on the fractions in [0, 1] minimizes
    Σ (10·max(0, value − ε))² + Σ max(0, ε − value)²: an excess costs 100 times a shortfall,
    so a cap that others hold down settles where they allow, and every constraint that can
    reach its ε gets close to it. Given a ``start``, it also stays near it.

    Examples:
        >>> fractions = joint_landing(problem)  # doctest: +SKIP
        >>> joint_values(problem, fractions)  # doctest: +SKIP
        {'model': 0.3001, 'fc1': 0.2842, 'fc2': 0.2911, 'fc3': 0.8995}
    """
    eps = torch.tensor(list(problem.targets_all.values()))
    initial = _uniform_start(problem, eps) if start is None else start
    fractions = initial.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([fractions], lr=0.02)
    # A decaying step: Adam's normalized steps would otherwise keep hopping across the kink at ε.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / iterations)
    with torch.enable_grad():
        for _ in range(iterations):
            gap = _values(problem, fractions) - eps
            loss = (10 * gap.clamp(min=0)).square().sum() + (-gap).clamp(min=0).square().sum()
            if start is not None:
                loss = loss + 1e-4 * (fractions - start).square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                fractions.clamp_(0.0, 1.0)
    return fractions.detach()


def joint_values(problem, fractions: torch.Tensor) -> dict[str, float]:
    """Every target constraint's value with each group open by its fraction in ``fractions``."""
    sizes = torch.tensor([g.num_units for g in problem.groups])
    with torch.no_grad():
        values = problem.constraint_values(units=torch.repeat_interleave(fractions, sizes))
    return {n: float(values[n]) for n in problem.targets_all}


def check_jointly_reachable(problem) -> None:
    """Refuse targets that no model can satisfy together, each as "at most ε".

    Targets are upper bounds: a loose cap beside a tighter one that keeps it lower (layer
    caps of 0.9 beside a model-wise 0.3) is accepted. Every constraint value grows with
    every unit's openness, so the targets hold together somewhere exactly when they hold
    with every unit closed; what can fail there is a cap below a floor no gate removes
    (the MACs of ungated layers, say). This raises naming each such constraint and its floor.

    Examples:
        >>> check_jointly_reachable(problem)  # doctest: +SKIP
    """
    targets = problem.targets_all
    closed = torch.zeros(len(problem.groups))
    with torch.no_grad():
        floors = dict(zip(targets, _values(problem, closed).tolist()))
    unreachable = {n: f for n, f in floors.items() if f > targets[n] + 1e-6}
    if unreachable:
        described = [
            f"{n!r} (ε = {targets[n]}, at least {f:.4f} with every gate closed)"
            for n, f in unreachable.items()
        ]
        raise ValueError(
            "these targets cannot hold, even as upper bounds: "
            + "; ".join(described)
            + ". Raise them above their floors (the share of the constraint that no gate counts in)"
        )
