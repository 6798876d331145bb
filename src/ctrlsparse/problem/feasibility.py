r"""The feasibility phase: decide the gates so that every realized density is at most ε.

The constraints of :class:`~ctrlsparse.SparsityProblem` bound the *expected* density
(eq. 12 of Louizos et al., 2018, summed as in eq. 16). The deployed model uses the
test-time gates :math:`\hat z` (eq. 13), and a gate that the expectation counts as
"40% active" may be fully open or fully closed at test time, so after training the
*realized* density can sit on either side of ε. This phase makes the deployed model
feasible by construction:

1. rank every unit by P(z ≠ 0);
2. while a constraint's realized value is above ε, close the least likely open units
   that count in it (the shortest such prefix, found by bisection);
3. for each constraint below ε, open the most likely closed units that count in it, as
   many as fit without pushing any constraint above ε; where coupled layers still leave a
   constraint more than a unit's share short of what the other targets allow
   (:func:`joint_aims`: a cap is an upper bound), move the groups' open fractions jointly
   to the highest point the targets allow together, then search the groups' open counts
   for trades between coupled groups (one fewer shared channel, two more of a block's
   own) that bring the worst shortfall, in units of each constraint's one-unit share, down;
4. where a group keeps its units in multiples of ``round_to`` (:func:`~ctrlsparse.sparsify`),
   round each group's open count to a count it allows (a multiple, or all of it:
   :meth:`~ctrlsparse.gating.GateGroup.aligned`): down, keeping its most likely units, but
   never below one block while it has open units; then up where that still fits under
   every ε (:func:`_round_to_blocks`);
5. fix the gates there (:meth:`~ctrlsparse.gating.GateGroup.decide_`): closed units at 0,
   open ones at their test-time value (1 for a unit this phase opened).

:class:`~ctrlsparse.GDA` then trains the open weights alone for the rest of the run.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch

from ctrlsparse.problem.cmp import SparsityProblem
from ctrlsparse.problem.reachability import joint_landing, joint_values


@dataclass
class Decision:
    """What deciding the gates changed, as ``summary.json["feasibility"]`` records it.

    Attributes:
        step: the step the phase started at.
        expected_before / realized_before: the constrained values (density or MACs fraction)
            per constraint just before the gates were decided.
        realized_after: the same values with the decided gates.
        closed / opened: units whose test-time gate this phase closed / opened.
        test_error_before / test_error_decided: test error just before deciding and right
            after (before the open weights train); set by :func:`~ctrlsparse.fit`.
    """

    step: int
    expected_before: dict[str, float]
    realized_before: dict[str, float]
    realized_after: dict[str, float]
    closed: int
    opened: int
    test_error_before: float | None = None
    test_error_decided: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _feasible(problem: SparsityProblem, open_: torch.Tensor, names: list[str]) -> bool:
    values = problem.target_values_at(open_)
    return all(float(values[n]) <= problem.targets_all[n] + 1e-9 for n in names)


def _prefix(candidates: torch.Tensor, ok) -> int:
    """Largest k in [0, len(candidates)] with ok(k) true, for ok monotone decreasing (ok(0) true)."""
    low, high = 0, len(candidates)
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _fractions_on_target(problem: SparsityProblem, open_: torch.Tensor) -> torch.Tensor:
    """Open fraction per group at the highest values the targets allow together
    (:func:`~ctrlsparse.problem.reachability.joint_landing`), near the fractions of ``open_``."""
    starts = problem.accounting.offsets
    now = torch.stack([open_[a : a + g.num_units].mean() for a, g in zip(starts, problem.groups)])
    return joint_landing(problem, start=now)


def joint_aims(problem: SparsityProblem) -> dict[str, float]:
    """What each target constraint can reach beside the others: its ε, or lower where the other
    targets hold it down at the joint landing
    (:func:`~ctrlsparse.problem.reachability.joint_landing`), by more than max(0.005, one
    unit's share): a loose cap, like layer caps of 0.9 beside a model-wise 0.3.

    Targets are upper bounds, so a loose cap is met wherever it lands; the phase aims it at
    what the coupling allows and does not warn that it landed short of its ε.

    Examples:
        >>> # {"0": 0.3, "2": 0.6, "4": 0.5}: layer 4 keeps at most half of layer 2's outputs
        >>> joint_aims(problem)  # doctest: +SKIP
        {'0': 0.3, '2': 0.5, '4': 0.5}
    """
    values = joint_values(problem, joint_landing(problem))
    aims = {}
    for name, eps in problem.targets_all.items():
        loose = eps - values[name] > max(0.005, problem.unit_share(name)) + 1e-9
        aims[name] = values[name] if loose else eps
    return aims


def _top_units(problem: SparsityProblem, fractions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Open the ``round(fraction × units)`` most likely units of each group."""
    open_ = torch.zeros_like(scores)
    for start, group, fraction in zip(problem.accounting.offsets, problem.groups, fractions.tolist()):
        count = round(fraction * group.num_units)
        best = torch.argsort(scores[start : start + group.num_units], descending=True, stable=True)[:count]
        open_[start + best] = 1.0
    return open_


@torch.no_grad()
def select_units(
    problem: SparsityProblem, open_: torch.Tensor, scores: torch.Tensor, aims: dict[str, float] | None = None
) -> torch.Tensor:
    """The open/closed state (1/0 per unit) closest from below to every target constraint's aim:
    its ε, or what the other targets allow for a loose cap (``aims``, by default
    :func:`joint_aims`).

    ``open_`` is the current test-time state and ``scores`` the units' P(z ≠ 0), both over
    the concatenated units of ``problem.groups``. Closing and opening unit by unit cannot
    trade between coupled layers (opening a layer's outputs raises the next layer's
    density); when that leaves a constraint more than a unit's share below its ε, the
    groups' open fractions are first moved jointly onto the targets, then rounded to units.
    """
    chosen = _close_then_open(problem, open_, scores)
    shortfall = _shortfall(problem, joint_aims(problem) if aims is None else aims)
    aligned = any(g.round_to > 1 for g in problem.groups)
    if max(max(s) for s in shortfall(chosen)) > 1.0:  # some constraint > a unit's share below its aim
        start = _top_units(problem, _fractions_on_target(problem, chosen), scores)
        repaired = _close_then_open(problem, start, scores)
        if shortfall(repaired) < shortfall(chosen):
            chosen = repaired
        if not aligned:
            chosen = _search_counts(problem, chosen, scores, shortfall)
    if aligned:
        chosen = _round_to_blocks(problem, chosen, scores, shortfall)
    return chosen


def _round_to_blocks(
    problem: SparsityProblem, open_: torch.Tensor, scores: torch.Tensor, shortfall
) -> torch.Tensor:
    """Step 4: each group's open count rounded to one its ``round_to`` allows, under every ε.

    Every group goes to its count rounded down, keeping its most likely units (closing units
    never raises a density, a MACs fraction or a shape count), except that a group with open
    units keeps at least one block: rounding 5 open channels to 0 would cut the network where
    the training kept it. Where those floors break a constraint, the group whose next block
    down leaves the least excess (ties: the least likely block) closes it; where every group
    is down to one block and a constraint is still above ε, the group with fewer open units
    than a block whose own count removes the most excess keeps that count, unaligned (with a
    warning), and so on until every constraint holds. Then :func:`_search_counts` rounds
    groups up where that still fits, each at most to the first allowed count above the count
    the gates were trained to: a search free to move blocks between groups would open units
    the training closed (conv channels, cheap in parameters, in place of a Linear layer's inputs).
    """
    groups, starts = problem.groups, problem.accounting.offsets
    orders, state = _by_count(problem, scores)
    counts = [int(open_[a : a + g.num_units].sum()) for a, g in zip(starts, groups)]
    floors = [g.aligned(1, up=True) if k else 0 for g, k in zip(groups, counts)]
    rounded = [max(g.aligned(k), f) for g, k, f in zip(groups, counts, floors)]
    grain = {n: max(0.005, problem.unit_share(n)) for n in problem.targets_all}

    def excess(trial: list[int]) -> float:
        values = problem.target_values_at(state(trial))
        return sum(max(0.0, float(values[n]) - eps) / grain[n] for n, eps in problem.targets_all.items())

    def excess_at(step: tuple[int, int]) -> float:
        i, count = step
        return excess(rounded[:i] + [count] + rounded[i + 1 :])

    def closing(step: tuple[int, int]) -> tuple[float, float]:
        i, count = step
        return excess_at(step), float(scores[orders[i][count : rounded[i]]].mean())

    unaligned = []
    while excess(rounded) > 1e-9:
        steps = [(i, _step(g, c, -1)) for i, (g, c, f) in enumerate(zip(groups, rounded, floors)) if c > f]
        if steps:
            i, count = min(steps, key=closing)
            rounded[i] = count
            continue
        below = [(i, counts[i]) for i in range(len(groups)) if counts[i] < rounded[i]]
        if not below:
            break  # the state before rounding was above ε already: nothing to do here
        i, count = min(below, key=excess_at)
        rounded[i] = floors[i] = count
        unaligned.append(i)
    if unaligned:
        listed = ", ".join(f"{groups[i].name!r} ({rounded[i]} of {groups[i].num_units})" for i in unaligned)
        warnings.warn(
            f"round_to: a whole block does not fit under every ε beside the other groups, so these groups "
            f"keep fewer units than a block, unaligned: {listed}. Use a smaller round_to or a larger ε",
            stacklevel=4,
        )
    bounds = [(r, max(r, g.aligned(k + 1, up=True))) for g, k, r in zip(groups, counts, rounded)]
    return _search_counts(problem, state(rounded), scores, shortfall, bounds=bounds)


def _by_count(problem: SparsityProblem, scores: torch.Tensor):
    """``(orders, state)``: each group's units, most likely first (indices into the concatenated
    units), and ``state(counts)``, the 0/1 state opening each group's ``count`` most likely units."""
    orders = [
        torch.argsort(scores[a : a + g.num_units], descending=True, stable=True) + a
        for a, g in zip(problem.accounting.offsets, problem.groups)
    ]

    def state(counts: list[int]) -> torch.Tensor:
        trial = torch.zeros_like(scores)
        for order, count in zip(orders, counts):
            trial[order[:count]] = 1.0
        return trial

    return orders, state


def _step(group, count: int, direction: int) -> int | None:
    """The next open count of ``group`` that its ``round_to`` allows, up (+1) or down (-1); None
    past either end."""
    if direction > 0:
        return None if count >= group.num_units else group.aligned(count + 1, up=True)
    return None if count <= 0 else group.aligned(count - 1)


def _shortfall(problem: SparsityProblem, aims: dict[str, float]):
    """``shortfall(open_)``: how far below its aim (:func:`joint_aims`) each target constraint
    sits, in units of its landing granularity max(0.005, one unit's share): the constraints
    aimed at their ε first, then the loose caps, each part largest first, so that tuples
    compare worst-first and a loose cap only breaks ties; ``((inf,),)`` where a constraint is
    above its ε."""
    grain = {n: max(0.005, problem.unit_share(n)) for n in aims}
    binding = [n for n in aims if aims[n] == problem.targets_all[n]]
    loose = [n for n in aims if n not in binding]

    def shortfall(open_: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        values = problem.target_values_at(open_)
        if any(float(values[n]) > eps + 1e-9 for n, eps in problem.targets_all.items()):
            return ((float("inf"),),)

        def part(names: list[str]) -> tuple[float, ...]:
            gaps = (round((aims[n] - float(values[n])) / grain[n], 9) for n in names)
            return tuple(sorted(gaps, reverse=True)) or (0.0,)

        return part(binding), part(loose)

    return shortfall


def _search_counts(
    problem: SparsityProblem,
    open_: torch.Tensor,
    scores: torch.Tensor,
    shortfall,
    rounds: int = 200,
    bounds: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Local search over the groups' open counts (each group opening its most likely units):
    move one group by ±1 unit, or two groups that count in a common constraint by ±1 each,
    while that lowers the shortfalls worst-first and keeps every constraint at or below ε.
    A group with ``round_to`` moves to its next allowed count instead of by one unit;
    ``bounds`` (per group: the lowest and highest open count) limits the moves
    (:func:`_round_to_blocks`).

    Rounding each group's open fraction on its own cannot trade between coupled layers
    (one fewer residual channel lets a block's inner layer keep two more); this finds such
    trades. Per-layer targets on coupled units often have no joint landing within one unit's
    share of every ε: the search then ends at the smallest worst shortfall it reaches.
    """
    groups, starts = problem.groups, problem.accounting.offsets
    orders, state = _by_count(problem, scores)
    counts = [int(open_[a : a + g.num_units].sum()) for a, g in zip(starts, groups)]

    best = shortfall(state(counts))
    if best > shortfall(open_):  # the units are not interchangeable within a group: keep the state
        return open_
    members = [set(u.tolist()) for n, u in problem.constraint_units().items()]
    group_units = [set(o.tolist()) for o in orders]
    moves = [((i, d),) for i in range(len(groups)) for d in (-1, 1)]
    if len(groups) <= 32:  # pairs of groups that share a constraint: O(groups²) trials a round
        coupled = [
            (i, j)
            for i in range(len(groups))
            for j in range(i + 1, len(groups))
            if any(group_units[i] & m and group_units[j] & m for m in members)
        ]
        moves += [((i, a), (j, b)) for i, j in coupled for a in (-1, 1) for b in (-1, 1)]
    for _ in range(rounds):
        improved = None
        for move in moves:
            trial = list(counts)
            for i, d in move:
                trial[i] = _step(groups[i], trial[i], d)
            if None in trial or (bounds and any(not lo <= c <= hi for c, (lo, hi) in zip(trial, bounds))):
                continue
            value = shortfall(state(trial))
            if value < best:
                best, improved = value, trial
        if improved is None:
            break
        counts = improved
    return state(counts)


def _close_then_open(problem: SparsityProblem, open_: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    names = list(problem.targets_all)
    units = problem.constraint_units()
    open_ = open_.clone()
    # 2. Close the least likely units of the most violated constraint until it holds.
    for _ in range(len(names) * 64):
        values = problem.target_values_at(open_)
        excess = {n: float(values[n]) - problem.targets_all[n] for n in names}
        name = max(excess, key=excess.get)
        if excess[name] <= 1e-9:
            break
        members = units[name]
        candidates = members[open_[members] > 0]
        if not len(candidates):  # nothing left to close (a floor no gate removes): give up
            break
        candidates = candidates[torch.argsort(scores[candidates], stable=True)]

        def still_violated(k: int, candidates=candidates, name=name, open_=open_) -> bool:
            trial = open_.clone()
            trial[candidates[:k]] = 0.0
            return float(problem.target_values_at(trial)[name]) > problem.targets_all[name] + 1e-9

        # Smallest prefix that satisfies it = (largest prefix still violating it) + 1.
        k = min(len(candidates), _prefix(candidates, lambda k: k == 0 or still_violated(k)) + 1)
        open_[candidates[:k]] = 0.0
    # 3. Open the most likely closed units of each constraint while every constraint holds.
    values = problem.target_values_at(open_)
    order = sorted(names, key=lambda n: float(values[n]) - problem.targets_all[n])
    for name in order:
        members = units[name]
        candidates = members[open_[members] == 0]
        candidates = candidates[torch.argsort(scores[candidates], descending=True, stable=True)]

        def fits(k: int, candidates=candidates, open_=open_) -> bool:
            trial = open_.clone()
            trial[candidates[:k]] = 1.0
            return _feasible(problem, trial, names)

        k = _prefix(candidates, lambda k: k == 0 or fits(k))
        open_[candidates[:k]] = 1.0
        # Past the first unit that does not fit, a few smaller ones may still fit.
        for unit in candidates[k + 1 : k + 33]:
            trial = open_.clone()
            trial[unit] = 1.0
            if _feasible(problem, trial, names):
                open_ = trial
    return open_


def _ranked(group) -> torch.Tensor:
    """The units' P(z ≠ 0), with a block-gated group's short last block (a width that is not a
    multiple of the block) ranked below its other blocks: it is kept only with the whole group, so
    the kept count stays a multiple of the block and every block stays whole."""
    scores = group.prob_active().flatten()
    block = getattr(group.gate, "block", 1)
    short = group.num_units % block
    if block > 1 and short and group.num_units > block:
        scores = scores.clone()
        scores[-short:] = scores[:-short].min() * (1 - 1e-6)
    return scores


@torch.no_grad()
def decide(problem: SparsityProblem, step: int = 0) -> Decision:
    """Decide every gate of ``problem`` (see the module's description); returns what changed.

    Examples:
        >>> decision = decide(problem)  # doctest: +SKIP
        >>> problem.constraint_values(realized=True)  # every target constraint <= its ε  # doctest: +SKIP
    """
    groups = problem.groups
    expected = {n: float(v) for n, v in problem.target_values_at(None).items()}
    test_time = torch.cat([g.deterministic().flatten() for g in groups])
    before = (test_time > 0).to(test_time.dtype)
    realized = {n: float(v) for n, v in problem.target_values_at(before).items()}
    scores = torch.cat([_ranked(g) for g in groups])
    aims = joint_aims(problem)
    after = select_units(problem, before, scores, aims)
    # Open units keep their test-time value; a unit this phase opened starts fully open.
    values = torch.where(after > 0, torch.where(before > 0, test_time, torch.ones_like(test_time)), 0.0)
    offset = 0
    for group in groups:
        group.decide_(values[offset : offset + group.num_units])
        offset += group.num_units
    realized_after = {n: float(v) for n, v in problem.target_values_at(after).items()}
    _warn_short_landings(problem, realized_after, {n for n, a in aims.items() if a < problem.targets_all[n]})
    return Decision(
        step=step,
        expected_before=expected,
        realized_before=realized,
        realized_after=realized_after,
        closed=int(((before > 0) & (after == 0)).sum()),
        opened=int(((before == 0) & (after > 0)).sum()),
    )


def _warn_short_landings(problem: SparsityProblem, realized: dict[str, float], loose: set[str]) -> None:
    """Warn when a decided constraint sits more than max(0.005, one unit's share) below its ε,
    unless the other targets hold it there (``loose``: a cap is an upper bound).

    Coupled targets can make that the best landing there is (ResNet-8's per-stage targets:
    no open counts put all eight within one share, docs/control.md); the user asked for ε
    and should hear which constraints got less, and by how much. Units kept in blocks of
    ``round_to`` land within a block's share: ``round_to`` units' shares.
    """
    short = []
    block = max(g.round_to for g in problem.groups)
    for name, eps in problem.targets_all.items():
        if name in loose:
            continue
        share = problem.unit_share(name)
        gap = eps - realized[name]
        if gap > max(0.005, block * share) + 1e-9:
            shares = f"{gap / share:.2f} one-unit shares"
            short.append(f"{name!r} at {realized[name]:.4f} for ε = {eps} ({shares})")
    if short:
        warnings.warn(
            "the feasibility phase could not land every constraint within one unit's share of its ε, "
            "because coupled layers share units; below their targets: "
            + "; ".join(short)
            + ". Every constraint is still <= its ε. Loosen the coupled targets, or use one "
            "model-wise target",
            stacklevel=3,
        )
