"""Statistics of blind human review: win rates with Wilson intervals, mean ratings with t intervals,
Bradley-Terry strengths for more than two systems, and position bias.

A pairwise judgement is a tuple (left_system, right_system, winner) where winner is left_system,
right_system or "tie"; the left system is the one shown on the left, which is what position bias needs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

TIE = "tie"



def _count(n: int, noun: str) -> str:
    """'1 tie', '2 ties', '0 ties'."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")

def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (as statsmodels' proportion_confint(method="wilson"));
    (0.0, 1.0) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class WinRate:
    a: str
    b: str
    wins_b: int
    wins_a: int
    ties: int
    n: int
    win_rate: float
    """wins of B / decided judgements (ties left out); 0.5 when nothing was decided"""
    ci_low: float
    ci_high: float
    tie_rate: float
    score: float
    """(wins of B + half the ties) / all judgements"""
    statement: str

    def to_json(self) -> dict:
        return asdict(self)


def win_rate(winners: Sequence[str], *, a: str = "A", b: str = "B", confidence: float = 0.95) -> WinRate:
    """Win rate of b over a from the winner of each judgement (a, b or "tie"), with a Wilson interval
    over the decided judgements. Significant when the interval excludes 0.5."""
    unknown = sorted({w for w in winners if w not in (a, b, TIE)})
    if unknown:
        raise ValueError(f"winner {unknown[0]!r} is neither {a!r}, {b!r} nor {TIE!r}")
    wins_b = sum(w == b for w in winners)
    wins_a = sum(w == a for w in winners)
    ties = len(winners) - wins_a - wins_b
    decided = wins_a + wins_b
    low, high = wilson_interval(wins_b, decided, confidence)
    rate = wins_b / decided if decided else 0.5
    if not decided:
        verdict = "no judgement was decided"
    elif low > 0.5 or high < 0.5:
        verdict = f"{b if low > 0.5 else a} is preferred (the interval excludes 50%)"
    else:
        verdict = "no clear preference (the interval includes 50%)"
    if not winners:  # a rate and an interval of nothing would read as a 50% result
        text = f"no judgements of {b} against {a} yet"
    else:
        text = (f"{b} wins {wins_b} and {a} wins {wins_a} of {_count(len(winners), 'judgement')} "
                f"({_count(ties, 'tie')}): {b}'s win rate {rate:.0%} ({confidence:.0%} CI {low:.0%} to {high:.0%}); "
                f"{verdict}")
    return WinRate(a=a, b=b, wins_b=wins_b, wins_a=wins_a, ties=ties, n=len(winners), win_rate=rate,
                   ci_low=low, ci_high=high, tie_rate=ties / len(winners) if winners else 0.0,
                   score=(wins_b + 0.5 * ties) / len(winners) if winners else 0.5, statement=text)


def mean_with_ci(ratings: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean rating with a Student t interval: {n, mean, sd, ci_low, ci_high} (interval NaN below 2 ratings)."""
    from scipy import stats

    x = np.asarray(ratings, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def _tally(judgements: Sequence[tuple[Hashable, Hashable, Hashable]]):
    systems: dict = {}
    for left, right, winner in judgements:
        if left == right:
            raise ValueError(f"a judgement compares {left!r} with itself")
        if winner not in (left, right, TIE):
            raise ValueError(f"winner {winner!r} is neither {left!r}, {right!r} nor {TIE!r}")
        systems.setdefault(left, len(systems))
        systems.setdefault(right, len(systems))
    k = len(systems)
    wins = np.zeros((k, k))  # wins[i, j]: how often i beat j outright
    ties = np.zeros((k, k))  # ties[i, j] = ties[j, i]: how often i and j tied
    for left, right, winner in judgements:
        i, j = systems[left], systems[right]
        if winner == TIE:
            ties[i, j] += 1
            ties[j, i] += 1
        elif winner == left:
            wins[i, j] += 1
        else:
            wins[j, i] += 1
    return list(systems), wins, ties


def bradley_terry(judgements: Sequence[tuple[Hashable, Hashable, Hashable]], *, prior: float = 0.0,
                  tol: float = 1e-12, max_iter: int = 100_000) -> dict:
    """Bradley-Terry strengths from pairwise judgements by Hunter's (2004) MM algorithm.

    P(i beats j) = p_i / (p_i + p_j); a tie counts as half a win for each side. prior adds that many
    virtual wins each way to every pair that was compared, which keeps the estimate finite when some system
    never wins or never loses (without it such data raise ValueError, since the maximum likelihood
    strengths are then 0 or infinite). Strengths are scaled to a geometric mean of 1.
    Returns {"ranking": [{system, strength, log_strength, wins, losses, ties, comparisons}, ...] strongest
    first, "iterations", "converged"}.
    """
    from scipy.sparse.csgraph import connected_components

    systems, outright, ties = _tally(judgements)
    k = len(systems)
    if k < 2:
        raise ValueError("Bradley-Terry needs judgements between at least two systems")
    wins = outright + 0.5 * ties  # a tie is half a win each way
    wins = wins + prior * ((wins + wins.T) > 0)
    games = wins + wins.T
    n_strong, _ = connected_components(wins > 0, directed=True, connection="strong")
    if n_strong > 1:
        n_weak, _ = connected_components(games > 0, directed=False)
        why = "some systems were never compared with the others, even indirectly" if n_weak > 1 else \
            "some group of systems never lost (or never won) against the rest"
        raise ValueError(f"the strengths are not finite: {why}; collect more judgements or pass prior=0.5")
    w = wins.sum(axis=1)
    p = np.ones(k)
    converged = False
    for iteration in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = w / denom
        new /= math.exp(np.log(new).mean())
        change = float(np.max(np.abs(np.log(new) - np.log(p))))
        p = new
        if change < tol:
            converged = True
            break
    order = np.argsort(-p, kind="stable")
    ranking = [{"system": systems[i], "strength": float(p[i]), "log_strength": float(math.log(p[i])),
                "wins": int(outright[i].sum()), "losses": int(outright[:, i].sum()), "ties": int(ties[i].sum()),
                "comparisons": int(outright[i].sum() + outright[:, i].sum() + ties[i].sum())}
               for i in order]
    return {"ranking": ranking, "iterations": iteration, "converged": converged}


def win_probability(strengths: dict, i: Hashable, j: Hashable) -> float:
    """P(i beats j) under Bradley-Terry, from {system: strength}."""
    return strengths[i] / (strengths[i] + strengths[j])


def position_bias(judgements: Sequence[tuple[Hashable, Hashable, Hashable]], *, confidence: float = 0.95) -> dict:
    """How often the left-hand output wins among decided judgements, with a Wilson interval; a fair
    review shows about 50%. {left_wins, right_wins, ties, n, left_win_rate, ci_low, ci_high, biased, statement}."""
    _tally(judgements)  # validates
    left = sum(w == lft for lft, _, w in judgements)
    right = sum(w == rgt for _, rgt, w in judgements)
    ties = len(judgements) - left - right
    decided = left + right
    low, high = wilson_interval(left, decided, confidence)
    rate = left / decided if decided else 0.5
    biased = bool(decided and (low > 0.5 or high < 0.5))
    text = (f"the left output wins {rate:.0%} of {_count(decided, 'decided judgement')} "
            f"({confidence:.0%} CI {low:.0%} to {high:.0%}, {_count(ties, 'tie')}): "
            + ("a position bias; randomise sides and check the reviewers" if biased else "no evidence of position bias"))
    return {"left_wins": left, "right_wins": right, "ties": ties, "n": len(judgements), "left_win_rate": rate,
            "ci_low": low, "ci_high": high, "biased": biased, "statement": text}
