"""Plots of stored runs (matplotlib, Agg backend, PNG and SVG), written next to the results.

- ``coverage``: coverage (pass@k) against k on a log2 axis, the Large Language Monkeys figure,
  with the majority vote over the same samples dashed: the gap is what a verifier buys.
- ``accuracy_vs_tokens``: accuracy against generated tokens per question for every run and
  selection method on one chart, the Snell et al. figure; ``accuracy_vs_usd`` the same
  against dollars, when some run cost money.

matplotlib is imported when a plot is drawn, never by ``import ttc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttc.errors import MissingDependencyError
from ttc.eval.report import RunReport

__all__ = ["plot_accuracy_vs_compute", "plot_coverage", "write_plots"]

_FORMATS = ("png", "svg")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("matplotlib", "plot", "Plots") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in _FORMATS:
        path = folder / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _log2_axis(ax: Any, top: float) -> None:
    ax.set_xscale("log", base=2)
    ticks = []
    k = 1
    while k <= top:
        ticks.append(k)
        k *= 2
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])


def plot_coverage(reports: Sequence[RunReport], folder: str | Path) -> list[Path]:
    """Coverage against the number of samples k (log2 axis), one line per run, with each
    run's majority vote dashed in the same colour. Returns the PNG and SVG paths."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        top = 1
        highest = 0.0
        for index, report in enumerate(reports):
            if not report.samples_are_draws:  # a search's beams are not samples
                continue
            colour = f"C{index % 10}"
            ks = sorted(report.coverage)
            top = max(top, ks[-1] if ks else 1)
            ax.plot(
                ks,
                [report.coverage[k] for k in ks],
                marker="o",
                markersize=3,
                markevery=_powers_of_two(ks),
                color=colour,
                label=f"{report.label}: coverage",
            )
            highest = max([highest, *report.coverage.values()])
            maj = sorted(report.majority)
            ax.plot(
                maj,
                [report.majority[k] for k in maj],
                linestyle="--",
                color=colour,
                alpha=0.8,
                label=f"{report.label}: majority vote",
            )
        _log2_axis(ax, top)
        ax.set_xlabel("samples per question (k)")
        ax.set_ylabel("fraction of questions solved")
        ax.set_ylim(0, _y_top(highest))
        ax.set_title(_title(reports, "Coverage (pass@k) vs samples"))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        return _save(fig, Path(folder), "coverage")
    finally:
        plt.close(fig)


def plot_accuracy_vs_compute(
    reports: Sequence[RunReport], folder: str | Path, *, usd: bool = False
) -> list[Path]:
    """Accuracy against generated tokens (or USD) per question, log2 axis: for every run its
    coverage with a verifier, its majority vote and its weighted vote (where scored) at each
    k, and the run's own accuracy as a star. Returns the PNG and SVG paths."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        highest = 0.0
        for index, report in enumerate(reports):
            colour = f"C{index % 10}"
            cost = report.usd if usd else report.tokens
            curves = [
                ("verifier (pass@k)", report.coverage, "-"),
                ("majority", report.majority, "--"),
            ]
            if report.weighted:
                curves.append(("weighted vote", report.weighted, ":"))
            if not report.samples_are_draws:  # a search: only its own point
                curves = []
            for name, curve, style in curves:
                ks = [k for k in sorted(curve) if cost.get(k, 0) > 0]
                if not ks:
                    continue
                ax.plot(
                    [cost[k] for k in ks],
                    [curve[k] for k in ks],
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    markevery=_powers_of_two(ks),
                    color=colour,
                    label=f"{report.label}: {name}",
                )
                highest = max([highest, *(curve[k] for k in ks)])
            spent = report.usd_per_question if usd else report.tokens_per_question
            if spent > 0:
                ax.plot(
                    [spent],
                    [report.accuracy],
                    marker="*",
                    markersize=11,
                    linestyle="none",
                    color=colour,
                    label=f"{report.label}: selected answer",
                )
                highest = max(highest, report.accuracy)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_plain_numbers())
        ax.set_xlabel("USD per question" if usd else "generated tokens per question")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, _y_top(highest))
        what = "USD" if usd else "generated tokens"
        ax.set_title(_title(reports, f"Accuracy vs {what}"))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        return _save(fig, Path(folder), "accuracy_vs_usd" if usd else "accuracy_vs_tokens")
    finally:
        plt.close(fig)


def _powers_of_two(ks: Sequence[int]) -> list[int]:
    """Indices of the points to mark: k = 1, 2, 4, ... and the last (every k is drawn)."""
    return [i for i, k in enumerate(ks) if k & (k - 1) == 0 or i == len(ks) - 1]


def _y_top(highest: float) -> float:
    """The y axis's top: 1 for curves that get near it, else a little above the highest
    point, so a weak model's curve is not flattened against the bottom."""
    return min(1.0, max(0.1, math.ceil(highest * 12) / 10))


def _plain_numbers() -> Any:
    """Tick labels as numbers (1,024 tokens, $0.0125) rather than powers of two."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:.3g}")


def _title(reports: Sequence[RunReport], what: str) -> str:
    datasets = sorted({str(r.config.get("dataset", "")) for r in reports} - {""})
    questions = sorted({r.questions for r in reports})
    count = f"{questions[0]} questions" if len(questions) == 1 else "questions"
    return f"{what}: {', '.join(datasets) or 'dataset'} ({count})"


def write_plots(reports: Sequence[RunReport], folder: str | Path) -> list[Path]:
    """Every plot for ``reports`` into ``folder``: coverage, accuracy vs tokens, and accuracy
    vs USD when some run cost money. Returns the files written. Coverage is drawn for runs of
    independent samples only (a search's beams are not: ``RunReport.samples_are_draws``)."""
    draws = [r for r in reports if r.samples_are_draws]
    paths = plot_coverage(draws, folder) if draws else []
    paths += plot_accuracy_vs_compute(reports, folder)
    if any(r.priced for r in reports):
        paths += plot_accuracy_vs_compute(reports, folder, usd=True)
    return paths


# --------------------------------------------------------------------------------------------
# Strategies compared at matched compute (ttc.eval.compare), with 95% bootstrap bands.


def _panels(plt: Any, levels: Sequence[str]) -> tuple[Any, list[Any]]:
    count = len(levels)
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _band(ax: Any, series: Any, colour: str, x: Sequence[float], style: str) -> float:
    points = series.points
    means = [p.accuracy.mean for p in points]
    ax.plot(x, means, linestyle=style, marker="o", markersize=3, color=colour, label=series.name)
    if len(points) > 1:
        ax.fill_between(
            x,
            [p.accuracy.low for p in points],
            [p.accuracy.high for p in points],
            color=colour,
            alpha=0.15,
            linewidth=0,
        )
    else:
        low, high = points[0].accuracy.low, points[0].accuracy.high
        ax.errorbar(x, means, yerr=[[means[0] - low], [high - means[0]]], color=colour)
    return float(max(p.accuracy.high for p in points))


def _level_title(level: str) -> str:
    from ttc.eval.compare import ALL

    return "all levels" if level == ALL else f"level {level}"


def plot_strategies(series: Sequence[Any], folder: str | Path, *, title: str = "") -> list[Path]:
    """Accuracy against generated tokens per question, one line per strategy (runs at
    several n, or votes over k samples of one run), one panel per level and one for all,
    each with its 95% bootstrap band over questions. Returns the PNG and SVG paths."""
    plt = _pyplot()
    shown = [s for s in series if s.kind in ("runs", "votes") and s.points]
    levels = list(dict.fromkeys(s.level for s in shown))
    if not levels:
        return []
    names = list(dict.fromkeys(s.name for s in shown))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, axes = _panels(plt, levels)
    try:
        for ax, level in zip(axes, levels):
            highest = 0.0
            for s in (s for s in shown if s.level == level):
                style = "--" if s.kind == "votes" else "-"
                x = [max(p.tokens, 1e-9) for p in s.points]
                highest = max(highest, _band(ax, s, colours[s.name], x, style))
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(_plain_numbers())
            ax.set_ylim(0, _y_top(highest))
            ax.set_title(_level_title(level), fontsize=9)
            ax.set_xlabel("generated tokens per question", fontsize=8)
            ax.set_ylabel("accuracy", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            fontsize=7,
            loc="lower center",
            ncol=min(3, len(labels)),
            bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 3)),
        )
        fig.suptitle(title or "Accuracy vs generated tokens (95% bootstrap bands)", fontsize=10)
        fig.tight_layout()
        return _save(fig, Path(folder), "strategies_vs_tokens")
    finally:
        plt.close(fig)


def plot_coverage_by_level(
    series: Sequence[Any], folder: str | Path, *, title: str = ""
) -> list[Path]:
    """Coverage (pass@k) and the majority vote against k (log2 axis) for each sampling run,
    one panel per level, with 95% bootstrap bands. Returns the PNG and SVG paths."""
    plt = _pyplot()
    shown = [s for s in series if s.points and (s.kind == "coverage" or "majority@k" in s.name)]
    levels = list(dict.fromkeys(s.level for s in shown))
    if not levels:
        return []
    fig, axes = _panels(plt, levels)
    try:
        for ax, level in zip(axes, levels):
            top = 1
            for index, s in enumerate(s for s in shown if s.level == level):
                x = [float(p.budget) for p in s.points]
                top = max(top, int(x[-1]))
                style = "-" if s.kind == "coverage" else "--"
                _band(ax, s, f"C{index % 10}", x, style)
            _log2_axis(ax, top)
            ax.set_ylim(0, 1.0)
            ax.set_title(_level_title(level), fontsize=9)
            ax.set_xlabel("samples per question (k)", fontsize=8)
            ax.set_ylabel("fraction solved", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, fontsize=7, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.06)
        )
        fig.suptitle(title or "Coverage and majority vote vs k (95% bootstrap bands)", fontsize=10)
        fig.tight_layout()
        return _save(fig, Path(folder), "coverage_by_level")
    finally:
        plt.close(fig)
