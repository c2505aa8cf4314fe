"""pass@k and coverage: how likely k samples contain a correct one, from n samples judged.

The unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), the chance that k of the n drawn without replacement include
a correct one. Computed as a product so that no binomial coefficient is ever formed.

Here, below the strategies, because ``RepeatedSample`` reports its pass@k curve;
``ttc.eval.metrics`` builds the vote-at-k estimates on it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

from ttc.errors import ConfigError

__all__ = ["coverage", "pass_at_k", "pass_at_k_curve"]


def _count(name: str, value: object) -> int:
    """``value`` as a non-negative int; ConfigError naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be >= 0, got {number}")
    return number


def _check(n: object, c: object, k: object) -> tuple[int, int, int]:
    n_, c_, k_ = _count("n", n), _count("c", c), _count("k", k)
    if c_ > n_:
        raise ConfigError(f"c (correct samples) must be <= n (samples), got c={c_}, n={n_}")
    if k_ < 1:
        raise ConfigError(f"k must be >= 1, got {k_}")
    if k_ > n_:
        raise ConfigError(f"k must be <= n (samples), got k={k_}, n={n_}")
    return n_, c_, k_


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021)."""
    n, c, k = _check(n, c, k)
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def _default_ks(n: int) -> list[int]:
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def pass_at_k_curve(n: int, c: int, ks: Iterable[int] | None = None) -> dict[int, float]:
    """pass@k for each k in ``ks`` (default 1, 2, 4, ... up to ``n``, and ``n`` itself)."""
    n_, c_ = _count("n", n), _count("c", c)
    if c_ > n_:
        raise ConfigError(f"c (correct samples) must be <= n (samples), got c={c_}, n={n_}")
    wanted = _default_ks(n_) if ks is None else sorted(set(ks))
    return {k: pass_at_k(n, c, k) for k in wanted}


def coverage(results: Sequence[tuple[int, int]], k: int) -> float:
    """Coverage (Brown et al. 2024): mean pass@k over problems, each given as ``(n, c)``."""
    if not results:
        raise ConfigError("coverage needs at least one (n, c) result")
    return sum(pass_at_k(n, c, k) for n, c in results) / len(results)
