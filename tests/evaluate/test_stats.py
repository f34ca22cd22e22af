"""The gate's statistics: the exact test, its power, the anytime-valid test and
the reweighting's rule for an empty stratum; the gate's decision built on them."""

import random
from math import comb

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from flywheel.evaluate.offline import GatePolicy, ItemResult, compare, gate
from flywheel.evaluate.stats import (
    decode_outcomes,
    detectable_gain,
    encode_outcomes,
    exact_mcnemar,
    needed_items,
    paired_power,
    reweighted_difference,
    sequential_test,
    should_stop,
)

WIN, LOSS, BOTH, NEITHER = (False, True), (True, False), (True, True), (False, False)


def results(outcomes, side):
    return {
        f"i{k}": ItemResult(f"i{k}", "c", pair[side], 1.0, 10, 10, None) for k, pair in enumerate(outcomes)
    }


def test_the_exact_test_is_a_one_sided_binomial_test_on_the_discordant_items():
    assert exact_mcnemar(4, 0) == pytest.approx(1 / 16)  # the issue's 4 of 22: not significant
    assert exact_mcnemar(5, 0) == pytest.approx(1 / 32)
    assert exact_mcnemar(7, 2) == pytest.approx(sum(comb(9, k) for k in range(7, 10)) / 2**9)
    assert exact_mcnemar(2, 7) == pytest.approx(sum(comb(9, k) for k in range(2, 10)) / 2**9)
    assert exact_mcnemar(0, 0) == 1.0


def test_the_power_is_that_of_the_test_the_gate_runs():
    """Enumerated with binomtest itself, every (discordant, candidate's) count."""
    n, q, gain, alpha = 25, 0.3, 0.15, 0.05
    share = 0.5 + gain / (2 * q)
    brute = sum(
        binom.pmf(d, n, q) * binom.pmf(c, d, share)
        for d in range(1, n + 1)
        for c in range(d + 1)
        if binomtest(c, d, 0.5, alternative="greater").pvalue <= alpha
    )
    assert paired_power(n, q, gain, alpha=alpha) == pytest.approx(brute, abs=1e-9)
    # no gain: the power is the test's size, at most alpha
    assert all(paired_power(n, 0.3, 0.0) <= 0.05 for n in (10, 30, 100, 1000))


def test_the_detectable_gain_shrinks_with_n_and_needed_items_reach_the_power():
    mdes = [detectable_gain(n, 0.2) for n in (30, 100, 300, 1000)]
    assert all(a > b for a, b in zip(mdes, mdes[1:], strict=False))
    assert 0.03 < mdes[-1] < 0.045 and 0.2 < mdes[0] < 0.25
    assert detectable_gain(4, 0.5) is None  # 4 items: p >= 1/16 whatever happens

    n = needed_items(0.05, 0.2)
    assert 450 < n < 600
    assert paired_power(n, 0.2, 0.05) >= 0.8 > paired_power(n // 2, 0.2, 0.05)
    assert detectable_gain(n, 0.2) <= 0.05 + 1e-4
    # and by simulation: 4,000 evaluations of n items with a true 5-point gain
    rng = np.random.default_rng(0)
    discordant = rng.binomial(n, 0.2, size=4000)
    gains = rng.binomial(discordant, 0.5 + 0.05 / 0.4)
    p = binom.sf(gains - 1, discordant, 0.5)
    assert np.mean(p <= 0.05) >= 0.8 - 3 * (0.8 * 0.2 / 4000) ** 0.5
    assert needed_items(0.0, 0.2) is None
    assert needed_items(0.02, 0.2) > 5 * n  # 2 points need (5/2)^2 as many


def test_the_sequential_test_stops_early_on_a_clear_win_and_a_clear_loss():
    run = [WIN] * 10 + [BOTH] * 5
    result = sequential_test(run)
    # e after t straight wins: 2^(t+1) B(t+1, 1) (1 - 2^-(t+1)) = (2^(t+1) - 1) / (t + 1)
    assert result["e_win"] == pytest.approx((2**11 - 1) / 11)
    assert result["decision"] == "win" and result["stopped_at"] == 7  # 255/8 >= 20 > 127/7
    assert should_stop(run[:6]) is None and should_stop(run[:7]) == "win"
    assert should_stop([LOSS, NEITHER] * 8) == "loss"
    assert should_stop([WIN, LOSS] * 200) is None
    assert sequential_test([])["decision"] is None


def test_the_e_value_keeps_false_wins_within_alpha_however_often_one_looks():
    """2,000 evaluations of 300 items by a candidate exactly as good (30% of
    items discordant, each way alike), checked after every item."""
    rng = random.Random(7)
    wins = losses = 0
    for _ in range(2000):
        run = [rng.choice((WIN, LOSS)) if rng.random() < 0.3 else BOTH for _ in range(300)]
        decision = should_stop(run, 0.05)
        wins += decision == "win"
        losses += decision == "loss"
    assert wins / 2000 <= 0.05 and losses / 2000 <= 0.05
    # a candidate slightly worse is called a win even more rarely
    worse = sum(
        should_stop([WIN if rng.random() < 0.4 else LOSS for _ in range(100)]) == "win" for _ in range(500)
    )
    assert worse / 500 <= 0.02


def test_an_empty_stratum_borrows_from_like_items_in_the_issues_case():
    """The issue's case: 22 items, the base right on none, the candidate on 4;
    some items are the base's own confirmed answers, none are corrections.
    Taking the missing corrected stratum at its worst (no fix) pulled the
    estimate towards 0; estimated from the items the base answers wrong it
    agrees with the plain difference and the exact test."""
    confirmed = [WIN] + [NEITHER] * 4
    other = [WIN] * 3 + [NEITHER] * 14
    ratings = {"up": 1, "down": 9}
    weighted = reweighted_difference({"baseline_confirmed": confirmed, "other_traffic": other}, ratings)
    plain = 4 / 22
    worst_rule = (5 * (0.1 * 1 / 5 + 0.9 * 0.0) + 3) / 22  # the old rule: 0.141
    assert weighted["difference"] == pytest.approx(plain, abs=0.01) and weighted["difference"] > worst_rule
    assert weighted["empty_strata"] == {
        "baseline_corrected": {
            "rule": "borrowed",
            "from": "items the baseline answers wrong",
            "items": 22,
            "difference": pytest.approx(plain),
        }
    }
    assert weighted["p_no_gain"] == pytest.approx(exact_mcnemar(4, 0), abs=0.01)
    assert weighted["ci95"][0] < 0 < weighted["ci95"][1]

    outcomes = confirmed + other
    origins = {f"i{k}": "baseline_confirmed" if k < 5 else "other_traffic" for k in range(22)}
    comparison = compare(
        results(outcomes, 0), results(outcomes, 1), origin_of=origins, baseline_ratings=ratings
    )
    decision = gate(comparison)
    assert decision["promote"] is False
    power = decision["power"]
    assert power["enough"] is False and power["needed_items"] > 300 and power["min_gain"] == 0.05
    assert "too few items" in decision["checks"][0]["check"]
    assert f"needs {power['needed_items']} items" in decision["checks"][0]["check"]


def test_the_gate_decision_states_its_test_power_and_sequential_verdict():
    rng = random.Random(3)
    outcomes = [rng.choices((WIN, LOSS, BOTH, NEITHER), (0.2, 0.05, 0.45, 0.3))[0] for _ in range(400)]
    comparison = compare(results(outcomes, 0), results(outcomes, 1))
    assert decode_outcomes(comparison["sequence"]) == outcomes
    assert comparison["sequence"] == encode_outcomes(outcomes)
    decision = gate(comparison)
    assert decision["promote"] is True and decision["gain"] == comparison["difference"]
    gains, losses = outcomes.count(WIN), outcomes.count(LOSS)
    assert decision["test"] == {
        "name": "exact McNemar (one-sided)",
        "p": pytest.approx(exact_mcnemar(gains, losses)),
        "alpha": 0.05,
    }
    power = decision["power"]
    assert {"n", "mde", "min_gain", "needed_items", "enough"} <= set(power)
    assert power["n"] == 400 and power["discordance"] == (gains + losses) / 400
    assert power["mde"] == pytest.approx(detectable_gain(400, power["discordance"]))
    assert power["needed_items"] == needed_items(0.05, power["discordance"])
    assert power["enough"] is (power["mde"] <= 0.05)
    sequential = decision["sequential"]
    assert sequential["decision"] == "win" and sequential["stopped_at"] < 400
    assert sequential["e_win"] >= 20 and sequential["items"] == 400

    # judged by the e-value instead (an evaluation that stopped early)
    early = compare(results(outcomes[:60], 0), results(outcomes[:60], 1))
    by_e = gate(early, GatePolicy(test="sequential"))
    assert by_e["promote"] is (by_e["sequential"]["decision"] == "win")
    assert "anytime-valid" in by_e["checks"][0]["check"]
    # a margin adds the CI check
    assert len(gate(comparison, GatePolicy(min_improvement=0.5))["checks"]) == len(decision["checks"]) + 1
    assert gate(comparison, GatePolicy(min_improvement=0.5))["promote"] is False
