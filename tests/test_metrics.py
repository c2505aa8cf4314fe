"""pass@k and coverage."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttc.errors import ConfigError
from ttc.eval.metrics import pass_at_k_curve
from ttc.scoring import coverage, pass_at_k


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def brute_force(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(1 for s in subsets if any(i < c for i in s)) / len(subsets)


@st.composite
def nck(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 10))
    c = draw(st.integers(0, n))
    k = draw(st.integers(1, n))
    return n, c, k


@given(nck())
def test_pass_at_k_equals_subset_count(args: tuple[int, int, int]) -> None:
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


@given(nck())
def test_pass_at_k_equals_binomial_form(args: tuple[int, int, int]) -> None:
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


@given(st.integers(2, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_grows_with_k(args: tuple[int, int]) -> None:
    n, c = args
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))


def test_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(10, 1, 10) == 1.0  # all samples drawn: any correct one is found
    assert pass_at_k(10, 3, 8) == 1.0  # n - c < k
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0


def test_large_n_is_stable() -> None:
    # C(10000, 5000) overflows a float; the product form does not need it.
    value = pass_at_k(10_000, 1, 5_000)
    assert value == pytest.approx(0.5)
    assert pass_at_k(10_000, 5, 1) == pytest.approx(5 / 10_000)


@pytest.mark.parametrize(
    ("n", "c", "k", "name"),
    [
        (5, 1, 6, "k"),
        (5, 1, 0, "k"),
        (5, 6, 1, "c"),
        (-1, 0, 1, "n"),
        (5, -1, 1, "c"),
        (5, 1, -2, "k"),
        (0, 0, 1, "k"),
        (5.0, 1, 1, "n"),
        (True, 1, 1, "n"),
    ],
)
def test_invalid_arguments(n: object, c: object, k: object, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        pass_at_k(n, c, k)  # type: ignore[arg-type]


def test_curve() -> None:
    curve = pass_at_k_curve(10, 2)
    assert list(curve) == [1, 2, 4, 8, 10]
    assert curve[1] == pytest.approx(0.2)
    assert curve[10] == 1.0
    assert list(pass_at_k_curve(8, 0)) == [1, 2, 4, 8]
    assert list(pass_at_k_curve(1, 1)) == [1]
    assert pass_at_k_curve(6, 3, ks=[3, 1, 3]) == pytest.approx({1: 0.5, 3: 0.95})
    with pytest.raises(ConfigError):
        pass_at_k_curve(4, 1, ks=[8])
    with pytest.raises(ConfigError):
        pass_at_k_curve(4, 5)


def test_coverage() -> None:
    results = [(10, 0), (10, 10), (10, 1)]
    assert coverage(results, 1) == pytest.approx((0.0 + 1.0 + 0.1) / 3)
    assert coverage(results, 10) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError):
        coverage([], 1)
    with pytest.raises(ConfigError):
        coverage([(4, 1)], 5)
