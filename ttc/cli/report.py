"""``ttc report`` and ``ttc salvage``: tables, markdown and plots of stored runs, and the
repair of a damaged results store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ttc.eval.compare import Series
    from ttc.eval.report import LevelRow, RunReport
    from ttc.eval.store import DamagedStoreError

__all__ = [
    "markdown_comparison",
    "markdown_report",
    "print_comparison",
    "print_reports",
    "report_command",
    "salvage_command",
]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _k_table(report: RunReport) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a run's table by k (1, 2, 4, ... n); the weighted vote and USD
    columns only where the run has scores and costs."""
    from ttc.eval.report import report_ks

    header = ["k", "pass@k %", "majority@k %"]
    if report.weighted:
        header.append("weighted@k %")
    header.append("tokens/q")
    if report.priced:
        header.append("USD/q")
    rows = []
    for k in report_ks(report.samples):
        if k not in report.coverage:
            continue
        row = [str(k), _pct(report.coverage[k]), _pct(report.majority.get(k))]
        if report.weighted:
            row.append(_pct(report.weighted.get(k)))
        row.append(f"{report.tokens[k]:,.0f}")
        if report.priced:
            row.append(f"{report.usd[k]:.5f}")
        rows.append(row)
    return header, rows


def _overview(report: RunReport) -> list[str]:
    from ttc.eval.report import format_cost

    n = report.samples
    # A search's candidates are its finished beams, not samples: no pass@k or votes over them.
    draws = report.samples_are_draws
    return [
        report.run,
        f"{report.questions}/{report.total}" if report.incomplete else str(report.questions),
        str(n),
        _pct(report.accuracy),
        _pct(report.coverage.get(1) if draws else None),
        _pct(report.coverage.get(n) if draws else None),
        _pct(report.majority.get(n) if draws else None),
        f"{report.tokens_per_question:,.0f}",
        format_cost(report.cost_usd, report.unpriced, unit=""),
    ]


_OVERVIEW_COLUMNS = [
    "run",
    "questions",
    "n",
    "accuracy %",
    "pass@1 %",
    "pass@n %",
    "majority@n %",
    "gen. tokens/q",
    "USD",
]
_SHORT_COLUMNS = ["run", "q", "n", "acc %", "p@1 %", "p@n %", "maj@n %", "tok/q", "USD"]


_LEVEL_COLUMNS = ["level", "questions", "accuracy %", "pass@1 %", "pass@n %", "majority@n %"]


def _level_cells(row: LevelRow, draws: bool = True) -> list[str]:
    return [
        row.level,
        str(row.questions),
        _pct(row.accuracy),
        _pct(row.pass_at_1 if draws else None),
        _pct(row.coverage if draws else None),
        _pct(row.majority if draws else None),
    ]


_BEAMS_NOTE = (
    "a search's candidates are its finished beams, not independent samples: pass@k and votes "
    "over k of them are not shown (-)"
)


def print_reports(console: Console, reports: list[RunReport]) -> None:
    """The reports as rich tables: an overview of the runs, then each run's curve and its
    breakdown by level."""
    overview = Table(
        title="runs",
        title_justify="left",
        caption="acc: selected answer right · p@k: pass@k (coverage) · maj@n: majority vote "
        "of all n · tok/q: generated tokens per question · q: stored/of the dataset when "
        "incomplete · -: not shown for searches (beams are not independent samples)",
        caption_justify="left",
    )
    # Short headers, so that a long run name keeps room on an 80-column terminal.
    for column in _SHORT_COLUMNS:
        if column == "run":
            overview.add_column(column, overflow="fold")
        else:
            overview.add_column(column, justify="right", no_wrap=True)
    for report in reports:
        overview.add_row(*_overview(report))
    console.print(overview)
    for report in reports:
        console.print()
        console.print(f"[bold]{escape(report.run)}[/]: {escape(report.label)}", soft_wrap=True)
        draws = report.samples_are_draws
        if draws:
            table = Table(title="by samples per question", title_justify="left")
            header, rows = _k_table(report)
            for column in header:
                table.add_column(column, justify="right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
        else:
            console.print(
                f"accuracy {_pct(report.accuracy)} % at {report.tokens_per_question:,.0f} "
                f"generated tokens a question; {_BEAMS_NOTE}",
                soft_wrap=True,
            )
        if report.levels:
            levels = Table(title="by level", title_justify="left")
            for column in _LEVEL_COLUMNS:
                levels.add_column(column, justify="right")
            for level in report.levels:
                levels.add_row(*_level_cells(level, draws))
            console.print(levels)
        if report.failures:
            console.print(
                f"[yellow]{report.failures} question(s) failed and are not counted[/]",
                soft_wrap=True,
            )
        if report.incomplete:
            hint = "rerun ttc eval to continue"
            if report.stopped_by == "unreadable":
                hint = "ttc salvage copies what can be read; ttc eval --out there redoes the rest"
            console.print(
                f"[yellow]incomplete:[/] {escape(report.incomplete)} ({hint})", soft_wrap=True
            )


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(reports: list[RunReport], plots: list[Path] | None = None) -> str:
    """The reports as Markdown for a README: the overview, each run's curve and levels, and
    the plots (linked by file name, so the Markdown sits next to them)."""
    parts = ["## Results", "", _md_table(_OVERVIEW_COLUMNS, [_overview(each) for each in reports])]
    for report in reports:
        config = ", ".join(f"{k}={v}" for k, v in report.config.items() if v is not None)
        parts += ["", f"### {report.run}", "", config, ""]
        if report.incomplete:
            parts += [f"**Incomplete**: {report.incomplete}.", ""]
        draws = report.samples_are_draws
        if draws:
            parts.append(_md_table(*_k_table(report)))
        else:
            parts.append(
                f"Accuracy {_pct(report.accuracy)} % at {report.tokens_per_question:,.0f} "
                f"generated tokens a question; {_BEAMS_NOTE}."
            )
        if report.levels:
            rows = [_level_cells(level, draws) for level in report.levels]
            parts += ["", _md_table(_LEVEL_COLUMNS, rows)]
    for plot in plots or []:
        if plot.suffix == ".png":
            parts += ["", f"![{plot.stem.replace('_', ' ')}]({plot.name})"]
    parts += [
        "",
        "pass@k: the unbiased estimator (Chen et al. 2021), mean over questions (coverage). "
        "majority@k / weighted@k: expected accuracy of a vote over k of the n stored samples "
        "(exact for majority; ties split evenly). tokens/q: generated tokens per question "
        "for k samples.",
    ]
    return "\n".join(parts) + "\n"


_COMPARISON_COLUMNS = ["strategy", "level", "n or k", "gen. tokens/q", "accuracy % [95% CI]", "q"]


def _comparison_rows(series: list[Series]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the strategies' table; a ``budget/q`` column (each run's budget
    of generated tokens per question) only when some run had one."""
    from ttc.eval.compare import ALL
    from ttc.eval.report import _level_key

    budgets = any(p.budget_tokens is not None for s in series for p in s.points)
    header = list(_COMPARISON_COLUMNS)
    if budgets:
        header.insert(3, "budget/q")
    rows = []
    ordered = sorted(series, key=lambda s: (s.level != ALL, _level_key(s.level)))
    for s in ordered:
        if s.kind == "coverage":
            continue
        for point in s.points:
            row = [s.name, s.level, str(point.budget)]
            if budgets:
                row.append("-" if point.budget_tokens is None else f"{point.budget_tokens:,}")
            row += [f"{point.tokens:,.0f}", str(point.accuracy), str(point.questions)]
            rows.append(row)
    return header, rows


def _coverage_rows(series: list[Series]) -> tuple[list[str], list[list[str]]]:
    """pass@k and majority@k by level, one column per k, with intervals."""
    from ttc.eval.compare import ALL
    from ttc.eval.report import _level_key

    chosen = [s for s in series if s.kind == "coverage" or s.name.endswith("majority@k")]
    chosen.sort(key=lambda s: (s.level != ALL, _level_key(s.level)))
    ks = sorted({p.budget for s in chosen for p in s.points})
    header = ["curve", "level", *[f"k={k}" for k in ks]]
    rows = []
    for s in chosen:
        by_k = {p.budget: str(p.accuracy) for p in s.points}
        rows.append([s.name, s.level, *[by_k.get(k, "-") for k in ks]])
    return header, rows


def print_comparison(console: Console, series: list[Series]) -> None:
    """Strategies at matched compute, and coverage by level, with 95% bootstrap intervals."""
    header, rows = _comparison_rows(series)
    if rows and len({r[0] for r in rows}) > 1:
        table = Table(
            title="strategies by generated tokens",
            title_justify="left",
            caption="accuracy of the selected answer, 95% bootstrap interval over questions; "
            "votes@k are over k of one run's samples; budget/q: the run's budget of generated "
            "tokens per question (an experiment's budgets)",
            caption_justify="left",
        )
        for column in header:
            table.add_column(column, justify="left" if column == "strategy" else "right")
        for row in rows:
            table.add_row(*row)
        console.print()
        console.print(table)
    header, cov = _coverage_rows(series)
    if cov:
        table = Table(title="coverage and majority by level (95% CI)", title_justify="left")
        for column in header:
            table.add_column(column, justify="left" if column == "curve" else "right")
        for row in cov:
            table.add_row(*row)
        console.print()
        console.print(table)


def markdown_comparison(series: list[Series]) -> str:
    """The comparison tables as Markdown (empty when there is nothing to compare)."""
    parts: list[str] = []
    header, rows = _comparison_rows(series)
    if rows and len({r[0] for r in rows}) > 1:
        parts += ["", "## Strategies by generated tokens", "", _md_table(header, rows)]
    header, cov = _coverage_rows(series)
    if cov:
        parts += ["", "## Coverage and majority by level", "", _md_table(header, cov)]
    if parts:
        parts += [
            "",
            "Intervals: 95% percentile bootstrap over questions (2,000 resamples, seed 0); "
            "overlapping intervals mean the data cannot tell the two apart.",
        ]
    return "\n".join(parts) + ("\n" if parts else "")


def report_command(
    folder: Annotated[Path, typer.Argument(help="A results folder written by ttc eval.")],
    run: Annotated[
        list[str] | None, typer.Option("--run", help="Only this run (repeat for several).")
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Print Markdown (for a README) and write report.md."),
    ] = False,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write PNG and SVG plots to the folder.")
    ] = True,
) -> None:
    """Tables and plots from a results folder written by ttc eval.

    pass@k (coverage), majority and weighted votes at every k, accuracy against generated
    tokens and USD, and a breakdown by level; plots are written into the folder.
    """
    from ttc.errors import ConfigError, MissingDependencyError
    from ttc.eval.report import load_reports
    from ttc.eval.store import DamagedStoreError

    err = Console(stderr=True)
    from ttc.eval.compare import load_comparison

    try:
        try:
            reports = load_reports(str(folder), run)
            series = load_comparison(str(folder), [r.run for r in reports])
        except DamagedStoreError as exc:
            reports, series = _reports_of_damaged(exc, run, err)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    written: list[Path] = []
    if plots:
        try:
            from ttc.eval.plots import plot_coverage_by_level, plot_strategies, write_plots

            written = write_plots(reports, folder)
            if len(reports) > 1 or any(len(s.points) > 1 for s in series):
                written += plot_strategies(series, folder)
            written += plot_coverage_by_level(series, folder)
        except MissingDependencyError as exc:
            err.print(f"[yellow]no plots:[/] {escape(str(exc))}", soft_wrap=True)
    if markdown:
        text = markdown_report(reports, written) + markdown_comparison(series)
        (folder / "report.md").write_text(text, encoding="utf-8")
        sys.stdout.write(text)
    else:
        print_reports(Console(), reports)
        print_comparison(Console(), series)
    for path in written:
        err.print(f"wrote {path}", soft_wrap=True)


def _reports_of_damaged(
    damaged: DamagedStoreError, runs: list[str] | None, err: Console
) -> tuple[list[RunReport], list[Series]]:
    """Reports and comparisons from the rows of a damaged store that can still be read (copied
    into a temporary store; the damaged file is only read), with a warning saying what is
    missing."""
    import tempfile

    from ttc.eval.compare import load_comparison
    from ttc.eval.report import load_reports
    from ttc.eval.store import salvage

    with tempfile.TemporaryDirectory(prefix="ttc-salvage-") as tmp:
        copied = salvage(damaged.path, tmp)
        if not copied.results:
            raise damaged  # nothing readable: the error says what to do
        err.print(f"[yellow]warning:[/] {escape(str(damaged))}", soft_wrap=True)
        lost = "; ".join(copied.lost) or "nothing"
        err.print(
            f"[yellow]reporting the {copied.results} stored question(s) that could be read; "
            f"unreadable: {escape(lost)}[/]",
            soft_wrap=True,
        )
        reports = load_reports(tmp, runs)
        series = load_comparison(tmp, [r.run for r in reports])
    for report in reports:
        if report.incomplete:
            report.stopped_by, report.stop_note = "unreadable", None
    return reports, series


def salvage_command(
    source: Annotated[Path, typer.Argument(help="The damaged results folder (or its file).")],
    target: Annotated[Path, typer.Argument(help="A new folder for what can be read.")],
) -> None:
    """Copy every row of a damaged results store that can still be read into a new folder.

    The damaged file is only read, never changed. Then use the new folder with --out:
    ttc eval answers again only the questions that could not be read.
    """
    from ttc.errors import ConfigError
    from ttc.eval.store import salvage

    err = Console(stderr=True)
    try:
        report = salvage(source, target)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    Console().print(
        f"copied {report.runs} run(s), {report.results} stored question(s) and "
        f"{report.failures} failure note(s) into {report.target}; {report.source} is unchanged",
        soft_wrap=True,
    )
    for what in report.lost:
        err.print(f"[yellow]could not read:[/] {escape(what)}", soft_wrap=True)
