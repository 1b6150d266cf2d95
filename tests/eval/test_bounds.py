"""p-values and bounds of trtbert.eval.bounds against scipy.stats, and their validity by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtbert.eval import bounds as Bd

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("n, p", [(1, 0.3), (10, 0.5), (500, 0.01), (2000, 0.01), (2000, 0.2), (40_000, 0.003)])
def test_binomial_cdf_matches_scipy(n: int, p: float) -> None:
    ks = sorted({0, 1, 2, int(n * p) - 3, int(n * p), int(n * p) + 5, n // 2, n - 1})
    for k in ks:
        if 0 <= k <= n:
            want = float(stats.binom.cdf(k, n, p))
            assert Bd.binomial_cdf(k, n, p) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_binomial_cdf_edges() -> None:
    assert Bd.binomial_cdf(-1, 10, 0.5) == 0.0
    assert Bd.binomial_cdf(10, 10, 0.5) == 1.0
    assert Bd.binomial_cdf(3, 10, 0.0) == 1.0
    assert Bd.binomial_cdf(3, 10, 1.0) == 0.0
    assert Bd.binomial_pvalue(0, 0, 0.1) == 1.0


@pytest.mark.parametrize("k, n", [(0, 230), (5, 1000), (14, 2000), (100, 1000)])
def test_clopper_pearson_upper_bound(k: int, n: int) -> None:
    want = float(stats.beta.ppf(0.9, k + 1, n - k))  # one-sided 90% upper bound
    assert Bd.binomial_upper_bound(k, n, 0.1) == pytest.approx(want, rel=1e-6)


def test_rows_needed() -> None:
    n = Bd.rows_needed(0.01, 0.1)
    assert n == 230  # 0.99**230 = 0.099 <= 0.1 < 0.99**229
    assert 0.99 ** n <= 0.1 < 0.99 ** (n - 1)
    m = Bd.rows_needed(0.01, 0.1, rate=0.005)
    assert m is not None and m > n
    assert Bd.binomial_pvalue(math.floor(0.005 * m), m, 0.01) <= 0.1
    assert Bd.rows_needed(0.01, 0.1, rate=0.01) is None


def test_hoeffding_bentkus_matches_its_formula() -> None:
    n, alpha, mean = 1000, 0.1, 0.07
    kl = mean * math.log(mean / alpha) + (1 - mean) * math.log((1 - mean) / (1 - alpha))
    want = min(math.exp(-n * kl), math.e * float(stats.binom.cdf(math.ceil(n * mean), n, alpha)))
    assert Bd.hoeffding_bentkus_pvalue(mean, n, alpha) == pytest.approx(want, rel=1e-9)
    assert Bd.hoeffding_bentkus_pvalue(0.2, n, alpha) == 1.0


def test_fixed_sequence_stops_at_first_failure() -> None:
    assert Bd.fixed_sequence([0.01, 0.05, 0.2, 0.01], 0.1) == 2
    assert Bd.fixed_sequence([0.2, 0.01], 0.1) == 0
    assert Bd.fixed_sequence([0.01, 0.02], 0.1) == 2
    assert Bd.fixed_sequence([float("nan")], 0.1) == 0


@pytest.mark.parametrize("kind", ["binomial", "hb", "wsr"])
def test_pvalues_are_valid_at_the_boundary(kind: str) -> None:
    """At risk exactly alpha, P(p <= delta) <= delta (up to simulation error): 400 draws."""
    rng = np.random.default_rng(1)
    alpha, delta, n, draws = 0.1, 0.1, 300, 400
    rejected = 0
    for _ in range(draws):
        if kind == "wsr":  # a three-valued loss with mean exactly alpha_wsr, like a shifted accuracy drop
            x = rng.choice([0.0, 0.5, 1.0], size=n, p=[0.05, 0.85, 0.10])
            p = Bd.wsr_pvalue(x, 0.525, delta)
        else:
            x = (rng.random(n) < alpha).astype(float)
            p = Bd.binomial_pvalue(int(x.sum()), n, alpha) if kind == "binomial" else \
                Bd.hoeffding_bentkus_pvalue(float(x.mean()), n, alpha)
        rejected += p <= delta
    # binomial: exact test (rate ~0.07-0.1); the others are conservative. 3 sigma margin over delta.
    assert rejected / draws <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)


def test_wsr_certifies_a_low_variance_loss_that_hoeffding_cannot() -> None:
    """An accuracy-drop-like loss: mostly 0 (shifted to 0.5), the mean well below the target."""
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=2000, p=[0.01, 0.98, 0.01])  # true drop 0
    x, alpha = (d + 1) / 2, (0.01 + 1) / 2  # target: drop <= 1 point
    assert Bd.wsr_pvalue(x, alpha, 0.1) <= 0.1
    assert Bd.hoeffding_bentkus_pvalue(float(x.mean()), x.size, alpha) > 0.1
