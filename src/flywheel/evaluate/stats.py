"""The statistics of the promotion gate, on paired binary outcomes: each
held-out item answered by the baseline and by the candidate, each answer right
or wrong. Only the discordant items (one version right, the other wrong) tell
the versions apart.

* ``exact_mcnemar``: the gate's test, one-sided: given ``d`` discordant items,
  the candidate's share of them is Binomial(d, 1/2) when it is no better.
* ``paired_power``, ``detectable_gain``, ``needed_items``: what that test can
  see at ``n`` items, computed exactly (a sum over the number of discordant
  items), not by the normal approximation.
* ``sequential_test``, ``should_stop``: an e-process on the same discordant
  items, valid at any stopping time, so evaluation can stop on a clear win or
  loss.
* ``reweighted_difference``: the difference with the baseline's own labels put
  back in the proportions of its traffic (label-bias correction).
* ``paired_bootstrap``, ``wilson_interval``, ``mcnemar_p``: for display.

scipy is imported where it is used: it costs more than a second to import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

__all__ = [
    "Outcome",
    "decode_outcomes",
    "detectable_gain",
    "encode_outcomes",
    "exact_mcnemar",
    "mcnemar_p",
    "needed_items",
    "paired_bootstrap",
    "paired_power",
    "reweighted_difference",
    "sequential_test",
    "should_stop",
    "wilson_interval",
]

#: One item's paired outcome: (baseline right, candidate right).
Outcome = tuple[bool, bool]

_CODES = {(True, True): "1", (False, False): "0", (False, True): "+", (True, False): "-"}
_PAIRS = {code: pair for pair, code in _CODES.items()}


def encode_outcomes(outcomes: Sequence[Outcome]) -> str:
    """Paired outcomes as one character each, in order: ``+`` only the
    candidate right, ``-`` only the baseline right, ``1`` both, ``0`` neither."""
    return "".join(_CODES[(bool(a), bool(b))] for a, b in outcomes)


def decode_outcomes(text: str) -> list[Outcome]:
    return [_PAIRS[code] for code in text]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z`` = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% CI of mean(b) - mean(a), resampling items (pairs stay together).

    Resampling n items with replacement draws the count of each distinct
    difference from a multinomial, which is how it is done here: the same
    distribution, at a cost that does not grow with n."""
    diffs = np.asarray([float(y) - float(x) for x, y in zip(a, b, strict=True)])
    n = len(diffs)
    if n == 0:
        return (0.0, 0.0)
    values, counts = np.unique(diffs, return_counts=True)
    rng = np.random.default_rng(seed)
    stats = np.sort(rng.multinomial(n, counts / n, size=reps) @ values / n)
    return float(stats[int(0.025 * reps)]), float(stats[min(reps - 1, int(0.975 * reps))])


def _discordant(outcomes: Sequence[Outcome]) -> tuple[int, int]:
    """(candidate only right, baseline only right)."""
    return (
        sum(1 for a, b in outcomes if b and not a),
        sum(1 for a, b in outcomes if a and not b),
    )


def mcnemar_p(a: list[bool], b: list[bool]) -> float:
    """Exact two-sided McNemar test: are the discordant pairs lopsided? (Shown
    beside the difference; the gate uses the one-sided ``exact_mcnemar``.)"""
    only_b, only_a = _discordant(list(zip(a, b, strict=True)))
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def exact_mcnemar(candidate_only: int, baseline_only: int) -> float:
    """One-sided exact McNemar p-value that the candidate is better: the chance
    of ``candidate_only`` or more of the discordant items going its way if each
    went either way with probability 1/2 (a binomial test)."""
    d = candidate_only + baseline_only
    if d == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(candidate_only, d, 0.5, alternative="greater").pvalue)


_CRITICAL: dict[float, np.ndarray] = {}  # per alpha, for d = 0, 1, ... (grown in powers of two)


def _critical(d: np.ndarray, alpha: float) -> np.ndarray:
    """``_critical_values`` looked up in a table per alpha."""
    table = _CRITICAL.get(alpha)
    need = int(d.max()) + 1 if len(d) else 1
    if table is None or len(table) < need:
        table = _CRITICAL[alpha] = _critical_values(np.arange(1 << max(10, (need - 1).bit_length())), alpha)
    return table[d]


def _critical_values(d: np.ndarray, alpha: float) -> np.ndarray:
    """For each number of discordant items in ``d``: the fewest going the
    candidate's way that the exact test at ``alpha`` calls a gain (``d + 1``
    when none does). The same comparison as the gate's: binomtest's one-sided
    p-value is the binomial survival function ``bdtrc``."""
    from scipy.special import bdtrc

    def p_value(c: np.ndarray, d: np.ndarray) -> np.ndarray:  # P(Binomial(d, 1/2) >= c)
        return np.where(c <= 0, 1.0, np.where(c > d, 0.0, bdtrc(np.clip(c - 1, 0, None), d, 0.5)))

    z = NormalDist().inv_cdf(1 - alpha)
    c = np.ceil(d / 2 + z * np.sqrt(d) / 2).astype(int)  # the normal approximation, then exact steps
    for step, wrong in (
        (1, lambda c, d: (p_value(c, d) > alpha) & (c <= d)),
        (-1, lambda c, d: p_value(c - 1, d) <= alpha),
    ):
        todo = np.flatnonzero(wrong(c, d))  # the whole table once, then only what moved
        while len(todo):
            c[todo] += step
            todo = todo[wrong(c[todo], d[todo])]
    return np.minimum(c, d + 1)


def paired_power(n: int, discordance: float, gain: float, *, alpha: float = 0.05) -> float:
    """The exact power of the one-sided exact McNemar test at ``alpha`` on ``n``
    items, when a share ``discordance`` of items has exactly one version right
    and the candidate's accuracy is higher by ``gain`` (so ``gain`` <=
    ``discordance``): the discordant count is Binomial(n, discordance) and,
    given it, the candidate's share Binomial(d, 1/2 + gain / (2 discordance))."""
    if n <= 0 or discordance <= 0:
        return 0.0
    from scipy.special import bdtrc, gammaln, xlog1py, xlogy

    q = min(1.0, discordance)
    share = 0.5 + max(-q, min(q, gain)) / (2 * q)
    spread = 12 * math.sqrt(n * q * (1 - q)) + 12
    d = np.arange(max(0, int(n * q - spread)), min(n, int(n * q + spread)) + 1)
    critical = _critical(d, alpha)
    pmf = np.exp(gammaln(n + 1) - gammaln(d + 1) - gammaln(n - d + 1) + xlogy(d, q) + xlog1py(n - d, -q))
    reject = np.where(critical <= d, bdtrc(np.maximum(critical - 1, 0), d, share), 0.0)
    return float(np.clip(np.sum(pmf * reject), 0.0, 1.0))


@lru_cache(maxsize=4096)  # a pure function of its numbers; each candidate of a cycle asks again
def detectable_gain(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest gain the exact test at ``alpha`` finds with probability
    ``power`` on ``n`` items (the minimum detectable effect), at the observed
    ``discordance`` (or at the gain itself where that is larger: a gain of g
    means at least a share g of items discordant). None when no gain is
    detectable at ``n`` (fewer than 5 items at alpha 0.05)."""

    def reaches(gain: float) -> bool:
        return paired_power(n, max(discordance, gain), gain, alpha=alpha) >= power

    if not reaches(1.0):
        return None
    low, high = 0.0, 1.0
    while high - low > 1e-4:  # power rises with the gain: bisect (to 0.01 points)
        mid = (low + high) / 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


@lru_cache(maxsize=4096)
def needed_items(
    gain: float, discordance: float, *, alpha: float = 0.05, power: float = 0.8, limit: int = 1_000_000
) -> int | None:
    """How many items the exact test at ``alpha`` needs to find a true ``gain``
    with probability ``power``, at ``discordance`` (at least ``gain``). The
    exact power of a discrete test is not quite monotone in n (it saw-tooths by
    a fraction of a point), so this bisects from the normal approximation
    (Connor 1987) and returns an n whose exact power reaches ``power``. None for
    a gain <= 0 or beyond ``limit`` items."""
    if gain <= 0:
        return None
    q = min(1.0, max(discordance, gain))

    def reaches(n: int) -> bool:
        return paired_power(n, q, gain, alpha=alpha) >= power

    z = NormalDist().inv_cdf
    guess = (z(1 - alpha) * math.sqrt(q) + z(power) * math.sqrt(max(q - gain * gain, 0.0))) ** 2
    high = max(5, math.ceil(guess / (gain * gain)))
    if high > 2 * limit:  # far beyond: not worth the exact sums
        return None
    while not reaches(high):
        if high >= limit:
            return None
        high = min(limit, high * 2)
    low = high // 2
    while low > 0 and reaches(low):
        low //= 2
    while high - low > 1:  # reaches(high), not reaches(low)
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def sequential_test(outcomes: Sequence[Outcome], alpha: float = 0.05) -> dict[str, Any]:
    """Anytime-valid tests of a win and of a loss on paired outcomes in the
    order they were evaluated (the order must not depend on the outcomes).

    Each discordant item goes the candidate's way with probability ``theta``
    (1/2 when the versions are equally good). The e-process for a win is the
    likelihood ratio of ``theta`` against 1/2 mixed over a uniform prior on
    ``theta`` in [1/2, 1]: 2^(t+1) B(s+1, t-s+1) P(Beta(s+1, t-s+1) > 1/2)
    after ``s`` of ``t`` discordant items went the candidate's way. It is a
    nonnegative supermartingale with mean <= 1 whenever the candidate is no
    better (theta <= 1/2), so by Ville's inequality it ever reaches 1/alpha
    with probability <= alpha: stopping the first time it does is a valid
    test whenever one looks. The loss e-process mirrors it on [0, 1/2]. A
    mixture SPRT for Bernoulli data, as the live watch's mSPRT is for rates.

    ``decision`` is "win" or "loss" at the first item where an e-process
    reached 1/alpha (``stopped_at``: items evaluated by then), else None.
    """
    from scipy.special import betainc, betaln

    flags = np.asarray([b for a, b in outcomes if a != b], dtype=float)
    where = np.asarray([i + 1 for i, (a, b) in enumerate(outcomes) if a != b], dtype=int)
    threshold = 1 / alpha
    result: dict[str, Any] = {
        "alpha": alpha,
        "threshold": threshold,
        "items": len(outcomes),
        "discordant": int(len(flags)),
        "candidate_only": int(flags.sum()),
        "e_win": 1.0,
        "e_loss": 1.0,
        "decision": None,
        "stopped_at": None,
    }
    if not len(flags):
        return result
    t = np.arange(1, len(flags) + 1, dtype=float)
    s = np.cumsum(flags)
    common = (t + 1) * math.log(2) + betaln(s + 1, t - s + 1)
    with np.errstate(divide="ignore"):
        log_win = common + np.log(betainc(t - s + 1, s + 1, 0.5))  # P(Beta(s+1, t-s+1) > 1/2)
        log_loss = common + np.log(betainc(s + 1, t - s + 1, 0.5))
    result["e_win"] = float(math.exp(min(float(log_win[-1]), 700.0)))
    result["e_loss"] = float(math.exp(min(float(log_loss[-1]), 700.0)))
    bound = math.log(threshold)
    crossed = np.flatnonzero((log_win >= bound) | (log_loss >= bound))
    if len(crossed):
        first = int(crossed[0])
        result["decision"] = "win" if log_win[first] >= bound else "loss"
        result["stopped_at"] = int(where[first])
    return result


def should_stop(outcomes: Sequence[Outcome], alpha: float = 0.05) -> Literal["win", "loss"] | None:
    """Between batches of evaluation: "win" or "loss" once the evidence is
    conclusive at ``alpha`` whenever one looks (``sequential_test``), else None
    (keep evaluating). ``outcomes``: every paired outcome so far, in order."""
    decision = sequential_test(outcomes, alpha)["decision"]
    return "win" if decision == "win" else "loss" if decision == "loss" else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def reweighted_difference(
    outcomes: dict[str, list[Outcome]],
    ratings: dict[str, int],
    *,
    reps: int = 4000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The accuracy difference with the baseline's own items in the proportions
    of its traffic, its 95% interval and a one-sided p-value of no gain.

    ``outcomes`` holds the paired outcomes per label origin. Within the
    baseline's own items, its confirmed ones stand for the share ``p`` of its
    traffic it gets right and its corrected ones for the rest, so their mean
    differences (candidate minus baseline) are weighed ``p`` and ``1 - p``,
    ``p`` being the up-rated share of its rated tasks (``feedback_accuracy``).
    Items from other traffic need no weighing; the two estimates are pooled by
    item count.

    An empty stratum (no confirmed, or no corrected, item) is estimated from
    the items that resemble it: the confirmed stratum is the baseline's right
    answers, where the candidate can only break things, so its difference is
    minus the candidate's break rate on all items the baseline answers right;
    the corrected stratum is its wrong answers, so its difference is the
    candidate's fix rate on all items the baseline answers wrong. This assumes
    the candidate breaks and fixes at the same rates whatever the label's
    origin, given the baseline's answer; the stratum is listed in
    ``empty_strata`` with the items it borrowed from. With no such item at all
    it takes its worst case for the candidate (every right answer broken, no
    wrong one fixed), as nothing is known.

    The interval and p-value come from posterior draws: ``p`` from
    Beta(up + 1, down + 1), each stratum's shares of (baseline only right,
    both or neither, candidate only right) from a Dirichlet on its counts with
    one pseudo-item added against the candidate for the lower tail and for the
    candidate for the upper one (as Clopper-Pearson does for a proportion);
    with one stratum and no weighing, the lower draws' share of no gain is the
    one-sided exact McNemar p-value. ``p_no_gain`` is that share (with the +1
    of a Monte Carlo p-value); ``effective_items`` is Kish's effective sample
    size of the weighted mean.
    None when no baseline items are held out or no task of it was rated.
    """
    confirmed = list(outcomes.get("baseline_confirmed", []))
    corrected = list(outcomes.get("baseline_corrected", []))
    other = list(outcomes.get("other_traffic", []))
    up, down = ratings["up"], ratings["down"]
    own = len(confirmed) + len(corrected)
    if own == 0 or up + down == 0:
        return None
    p = up / (up + down)
    total = own + len(other)
    everything = confirmed + corrected + other
    rng = np.random.default_rng(seed)

    def gamma(shape: int) -> np.ndarray:
        return rng.gamma(shape, size=reps) if shape > 0 else np.zeros(reps)

    def draws(pairs: list[Outcome], lean: int) -> np.ndarray:
        """The stratum's mean difference; ``lean`` -1: a pseudo-item against the candidate, +1: for it."""
        gains, losses = _discordant(pairs)
        minus, plus = gamma(losses + (lean < 0)), gamma(gains + (lean > 0))
        return (plus - minus) / (minus + gamma(len(pairs) - gains - losses) + plus)

    def rate(hits: int, misses: int, lean: int) -> np.ndarray:
        """A rate's draws, Beta(hits, misses) with the pseudo-item on the side ``lean`` says."""
        g = gamma(hits + (lean > 0))
        return g / (g + gamma(misses + (lean < 0)))

    empty: dict[str, Any] = {}
    point: dict[str, float] = {}
    sides: dict[str, dict[int, np.ndarray]] = {}
    weights = np.zeros(len(everything))
    if confirmed:
        point["confirmed"] = _mean([float(b) - float(a) for a, b in confirmed])
        sides["confirmed"] = {lean: draws(confirmed, lean) for lean in (-1, 1)}
        weights[: len(confirmed)] = own * p / len(confirmed)
    else:  # minus the break rate where the baseline is right
        right = [i for i, (a, _) in enumerate(everything) if a]
        breaks = sum(1 for i in right if not everything[i][1])
        point["confirmed"] = -breaks / len(right) if right else -1.0
        sides["confirmed"] = {lean: -rate(breaks, len(right) - breaks, -lean) for lean in (-1, 1)}
        weights[right] += own * p / max(1, len(right))
        empty["baseline_confirmed"] = {
            "rule": "borrowed" if right else "worst case",
            "from": "items the baseline answers right",
            "items": len(right),
            "difference": point["confirmed"],
        }
    if corrected:
        point["corrected"] = _mean([float(b) - float(a) for a, b in corrected])
        sides["corrected"] = {lean: draws(corrected, lean) for lean in (-1, 1)}
        weights[len(confirmed) : own] = own * (1 - p) / len(corrected)
    else:  # the fix rate where the baseline is wrong
        wrong = [i for i, (a, _) in enumerate(everything) if not a]
        fixes = sum(1 for i in wrong if everything[i][1])
        point["corrected"] = fixes / len(wrong) if wrong else 0.0
        sides["corrected"] = {lean: rate(fixes, len(wrong) - fixes, lean) for lean in (-1, 1)}
        weights[wrong] += own * (1 - p) / max(1, len(wrong))
        empty["baseline_corrected"] = {
            "rule": "borrowed" if wrong else "worst case",
            "from": "items the baseline answers wrong",
            "items": len(wrong),
            "difference": point["corrected"],
        }
    point["other"] = _mean([float(b) - float(a) for a, b in other])
    sides["other"] = {lean: draws(other, lean) if other else np.zeros(reps) for lean in (-1, 1)}
    weights[own:] += 1.0

    def estimate(share: Any, on_confirmed: Any, on_corrected: Any, on_other: Any) -> Any:
        return (own * (share * on_confirmed + (1 - share) * on_corrected) + len(other) * on_other) / total

    low, high = (
        estimate(
            rng.beta(up + 1, down + 1, size=reps),
            sides["confirmed"][lean],
            sides["corrected"][lean],
            sides["other"][lean],
        )
        for lean in (-1, 1)
    )
    low.sort()
    high.sort()
    return {
        "difference": float(estimate(p, point["confirmed"], point["corrected"], point["other"])),
        "ci95": [float(low[int(0.025 * reps)]), float(high[min(reps - 1, int(0.975 * reps))])],
        "p_no_gain": float((1 + np.sum(low <= 0)) / (1 + reps)),
        "effective_items": float(weights.sum() ** 2 / np.sum(weights**2)) if weights.any() else 0.0,
        "baseline_traffic_accuracy": p,
        "ratings": dict(ratings),
        "empty_strata": empty,
    }
