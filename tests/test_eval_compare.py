"""Strategies compared at matched compute: series, bootstrap intervals, tables and plots."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc.cli import app
from ttc.eval.compare import ALL, Interval, bootstrap, compare_runs
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.types import Candidate, Result, Usage


def _records(
    n: int, right: list[int], selected: list[bool], *, score: bool
) -> list[QuestionRecord]:
    """Questions of levels 1 and 2 alternately; question q has right[q] right samples of n."""
    records = []
    for q, (ok, chosen) in enumerate(zip(right, selected)):
        candidates = [
            Candidate(
                text="x",
                answer="7" if i < ok else str(10 + i % 2),
                verified=i < ok,
                completion_tokens=10,
                scores={"arithmetic": 1.0 if i < ok else 0.0} if score else {},
            )
            for i in range(n)
        ]
        records.append(
            QuestionRecord(
                id=str(q),
                position=q,
                question=f"q{q}",
                reference="7",
                level=str(1 + q % 2),
                fingerprint="f",
                correct=chosen,
                result=Result(
                    answer="7",
                    best=candidates[0],
                    candidates=candidates,
                    usage=Usage(completion_tokens=10 * n),
                ),
            )
        )
    return records


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    first = bootstrap(values, seed=3)
    assert first == bootstrap(values, seed=3)
    assert first.mean == pytest.approx(0.3)
    assert first.low < first.mean < first.high
    assert first.low >= 0.0 and first.high <= 1.0
    assert bootstrap([1.0, 1.0]) == Interval(1.0, 1.0, 1.0)
    assert bootstrap([]) == Interval(0.0, 0.0, 0.0)
    # More questions, narrower interval.
    wide, narrow = bootstrap(values), bootstrap(values * 10)
    assert narrow.high - narrow.low < wide.high - wide.low
    assert Interval(0.2, 0.1, 0.3).overlaps(Interval(0.3, 0.25, 0.5))
    assert not Interval(0.2, 0.1, 0.3).overlaps(Interval(0.5, 0.4, 0.6))


def test_runs_of_a_strategy_become_one_series_per_level_with_vote_curves() -> None:
    beam = {"strategy": "beam-prm", "prm": "arithmetic", "dataset": "d"}
    runs = [
        (
            "beam2",
            {**beam, "n": 2, "width": 2},
            _records(2, [1, 0, 1, 0], [True, False] * 2, score=False),
        ),
        ("beam8", {**beam, "n": 8, "width": 4}, _records(8, [4, 2, 4, 2], [True] * 4, score=False)),
        (
            "bon",
            {"strategy": "best-of-n", "scorer": "prm", "n": 4, "dataset": "d"},
            _records(4, [3, 1, 3, 1], [True, False, True, False], score=True),
        ),
    ]
    series = compare_runs(runs)
    by = {(s.name, s.level): s for s in series}
    beams = by[("beam-prm (arithmetic)", ALL)]
    assert [p.budget for p in beams.points] == [2, 8]  # width differs, still one series
    assert [p.accuracy.mean for p in beams.points] == [0.5, 1.0]
    assert [p.tokens for p in beams.points] == [20, 80]
    assert by[("beam-prm (arithmetic)", "1")].points[0].accuracy == Interval(1.0, 1.0, 1.0)
    assert by[("beam-prm (arithmetic)", "2")].points[0].accuracy == Interval(0.0, 0.0, 0.0)
    # The sampling run gives majority@k, weighted@k and pass@k at k = 1, 2, 4.
    majority = by[("best-of-n (prm): majority@k", ALL)]
    weighted = by[("best-of-n (prm): weighted@k", ALL)]
    coverage = by[("best-of-n (prm): pass@k", "2")]
    assert [p.budget for p in majority.points] == [1, 2, 4]
    assert [p.tokens for p in majority.points] == [10, 20, 40]
    assert majority.points[0].accuracy.mean == pytest.approx(0.5)  # (3/4 + 1/4) / 2
    assert weighted.points[-1].accuracy.mean == 1.0  # the PRM finds the right answer
    assert coverage.points[-1].accuracy.mean == 1.0 and coverage.kind == "coverage"


def test_report_shows_intervals_and_draws_the_comparison(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with ResultsStore(tmp_path) as store:
        for name, strategy, n, right in (
            ("dvts-a", "dvts", 2, [1, 0, 1, 0]),
            ("dvts-b", "dvts", 4, [2, 1, 2, 1]),
            ("sc", "self-consistency", 4, [3, 0, 2, 1]),
        ):
            config = {"strategy": strategy, "n": n, "dataset": "d", "prm": "arithmetic"}
            store.open_run(name, config)
            for record in _records(n, right, [True, False, True, True], score=False):
                store.put(name, record)
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--markdown"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert "## Coverage and majority by level" in text
    assert "| dvts (arithmetic) | all | 2 | 20 | 75.0 [25.0, 100.0] | 4 |" in text
    assert "| self-consistency: pass@k | 1 | 62.5 [50.0, 75.0] | 91.7 [83.3, 100.0] |" in text
    assert "95% percentile bootstrap" in text
    for stem in ("strategies_vs_tokens", "coverage_by_level"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 5000
