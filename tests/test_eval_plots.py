"""Plots are written (PNG and SVG, non-empty) and matplotlib and ray load only when used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttc.eval.report import build_report
from ttc.eval.store import QuestionRecord
from ttc.types import Candidate, Result, Usage

pytest.importorskip("matplotlib")


def run_report(name: str, right: int, n: int, cost: float) -> list[QuestionRecord]:
    records = []
    for q in range(4):
        candidates = [
            Candidate(text="x", answer=str(i % 3), verified=i < right + q % 2, completion_tokens=20)
            for i in range(n)
        ]
        records.append(
            QuestionRecord(
                id=str(q),
                position=q,
                question=f"q{q}",
                reference="0",
                fingerprint="f",
                correct=candidates[0].verified is True,
                result=Result(
                    answer="0",
                    best=candidates[0],
                    candidates=candidates,
                    usage=Usage(completion_tokens=20 * n, cost_usd=cost),
                ),
            )
        )
    return records


def test_plots_are_written_as_png_and_svg(tmp_path: Path) -> None:
    from ttc.eval.plots import write_plots

    reports = [
        build_report(
            "a",
            {"strategy": "repeated-sample", "n": 8, "dataset": "d"},
            run_report("a", 1, 8, 0.01),
        ),
        build_report(
            "b",
            {"strategy": "self-consistency", "n": 16, "dataset": "d"},
            run_report("b", 3, 16, 0.02),
        ),
    ]
    written = write_plots(reports, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("coverage", "accuracy_vs_tokens", "accuracy_vs_usd")
        for ext in ("png", "svg")
    )
    for path in written:
        data = path.read_bytes()
        assert len(data) > 5000
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG")
        else:
            assert b"<svg" in data


def test_nothing_heavy_loads_until_a_plot_or_a_ray_run() -> None:
    heavy = ["matplotlib", "ray", "llama_cpp", "litellm", "sympy", "math_verify", "torch"]
    code = (
        "import json, sys\n"
        "import ttc.eval, ttc.eval.runner, ttc.eval.report, ttc.eval.plots, ttc.cli\n"
        "import ttc.eval.ray_runner, ttc.eval.datasets, ttc.eval.store\n"
        "from ttc.eval import evaluate, load_dataset, Solver, write_plots\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
