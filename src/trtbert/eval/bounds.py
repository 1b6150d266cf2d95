"""Valid p-values and confidence bounds for the mean of a bounded loss, and fixed-sequence testing.

Pure numpy (the device has no scipy). Every p-value here is for the null hypothesis "the risk (the
mean loss over the population the rows were drawn from) is above ``alpha``": a small p-value
certifies ``risk <= alpha``. They are the building blocks of Learn-then-Test (Angelopoulos et al.
2021, "Learn then Test: calibrating predictive algorithms to achieve risk control"):

- :func:`binomial_pvalue`: losses in {0, 1}; ``P(Bin(n, alpha) <= errors)``, exact (log-space sum).
  Valid because that tail only grows as the true risk shrinks, so under the null it is at most the
  value at ``alpha``.
- :func:`hoeffding_bentkus_pvalue`: losses in [0, 1]; the minimum of Hoeffding's and Bentkus' tail
  bounds (Bates et al. 2021, "Distribution-free, risk-controlling prediction sets", LTT eq. 11).
- :func:`wsr_pvalue`: losses in [0, 1]; Waudby-Smith & Ramdas betting martingale with the predictable
  plug-in bet of LTT (Prop. 5): ``1 / max_i K_i``, valid by Ville's inequality. Adapts to the
  variance, which matters for losses that are mostly 0 (an accuracy drop).
- :func:`fixed_sequence`: hypotheses ordered before the data are seen, tested one after another at
  the full level ``delta``; stop at the first p-value above ``delta``. Every hypothesis rejected
  before the stop holds jointly with probability at least ``1 - delta`` (family-wise error), so any
  of them may be chosen afterwards, by any criterion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_MAX_ROWS = 10_000_000


def _log_factorials(n: int) -> np.ndarray:
    """``log(j!)`` for ``j = 0..n`` (exact lgamma per term, no accumulated rounding)."""
    return np.array([math.lgamma(j + 1.0) for j in range(n + 1)])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, summed exactly in log space."""
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    k = int(math.floor(k))
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    j = np.arange(k + 1)
    lf = _log_factorials(n)
    log_terms = lf[n] - lf[j] - lf[n - j] + j * math.log(p) + (n - j) * math.log1p(-p)
    top = float(log_terms.max())
    total = top + math.log(float(np.exp(log_terms - top).sum()))
    return min(1.0, math.exp(total))


def binomial_pvalue(errors: int, n: int, alpha: float) -> float:
    """p-value of "risk > ``alpha``" after ``errors`` losses of 1 among ``n`` rows of 0/1 losses."""
    if n == 0:
        return 1.0
    return binomial_cdf(errors, n, alpha)


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """One-sided ``1 - delta`` Clopper-Pearson upper bound of a 0/1 risk: the largest ``p`` whose
    p-value ``P(Bin(n, p) <= errors)`` is still at least ``delta``."""
    if n == 0 or errors >= n:
        return 1.0
    lo, hi = errors / n, 1.0
    for _ in range(100):  # bisection: the tail decreases in p
        mid = 0.5 * (lo + hi)
        if binomial_cdf(errors, n, mid) >= delta:
            lo = mid
        else:
            hi = mid
    return hi


def _h1(a: float, b: float) -> float:
    """Bernoulli KL divergence ``KL(a || b)``."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def hoeffding_bentkus_pvalue(mean: float, n: int, alpha: float) -> float:
    """p-value of "risk > ``alpha``" from the empirical ``mean`` of ``n`` losses in [0, 1]."""
    if n == 0 or alpha >= 1.0:
        return 1.0
    if alpha <= 0.0:
        return 1.0 if mean > 0 else 0.0
    hoeffding = math.exp(-n * _h1(min(mean, alpha), alpha))
    bentkus = math.e * binomial_cdf(math.ceil(n * mean - 1e-9), n, alpha)
    return min(1.0, hoeffding, bentkus)


def wsr_pvalue(losses: np.ndarray, alpha: float, delta: float) -> float:
    """p-value of "risk > ``alpha``" from losses in [0, 1], in the order given (shuffle i.i.d. rows
    with a fixed seed first): ``1 / max_i prod_{j<=i} (1 - nu_j (L_j - alpha))``."""
    x = np.clip(np.asarray(losses, dtype=np.float64).ravel(), 0.0, 1.0)
    n = x.size
    if n == 0 or alpha >= 1.0:
        return 1.0
    steps = np.arange(1, n + 1)
    mu = (np.cumsum(x) + 0.5) / (steps + 1)
    sigma2 = (np.cumsum((x - mu) ** 2) + 0.25) / (steps + 1)
    sigma2 = np.concatenate([[0.25], sigma2[:-1]])  # predictable: uses rows before j only
    nu = np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (n * sigma2)), 1.0)
    log_wealth = np.cumsum(np.log1p(-nu * (x - alpha)))
    return float(min(1.0, math.exp(-max(0.0, float(log_wealth.max())))))


def fixed_sequence(pvalues: Sequence[float], delta: float) -> int:
    """How many hypotheses, from the first, are rejected at level ``delta`` before the first p-value
    above ``delta``."""
    for i, p in enumerate(pvalues):
        if not p <= delta:
            return i
    return len(pvalues)


def rows_needed(alpha: float, delta: float, rate: float = 0.0) -> int | None:
    """The fewest rows for which an observed 0/1 risk of ``rate`` (``floor(rate * n)`` errors) would be
    certified at ``alpha`` with level ``delta``; None when ``rate >= alpha`` (no number of rows would do)."""
    if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"alpha and delta must be in (0, 1), got {alpha} and {delta}")
    if rate >= alpha:
        return None
    rate = max(rate, 0.0)
    zero = math.ceil(math.log(delta) / math.log1p(-alpha))
    if rate == 0.0:
        return zero

    def passes(n: int) -> bool:
        return binomial_pvalue(math.floor(rate * n), n, alpha) <= delta

    hi = zero
    while not passes(hi):
        hi *= 2
        if hi > _MAX_ROWS:
            return None
    lo = zero - 1  # fails: even zero errors need `zero` rows
    while hi - lo > 1:  # the smallest passing n, up to the wobble of floor(rate * n)
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi
