"""``ttc eval`` and ``ttc report``: the evaluation commands, as typer command functions.

``register(app)`` adds them to the ``ttc`` typer app (``ttc/cli.py`` does); ``python -m
ttc.eval`` runs them on their own. Option names follow ``ttc run``: ``--strategy``, ``--n``,
``--model``, ``--temperature``, ``--max-tokens``, ``--seed``, ``--budget-*``, ``--json``.
Heavy modules (llama_cpp, litellm, matplotlib, ray) load only when a command needs them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ttc.cli_options import (
    ApiKeyEnvOption,
    ApiKeyOption,
    BaseUrlOption,
    ParamOption,
    PrmOption,
    endpoint_options,
    strategy_spec,
)

if TYPE_CHECKING:
    from ttc.eval.compare import Series
    from ttc.eval.report import LevelRow, RunReport
    from ttc.eval.runner import EvalSummary
    from ttc.eval.store import DamagedStoreError

_T = TypeVar("_T")

__all__ = [
    "EvalStrategy",
    "eval_command",
    "markdown_comparison",
    "markdown_report",
    "print_comparison",
    "print_reports",
    "register",
    "report_command",
]


class EvalStrategy(str, Enum):
    """The strategies ``ttc eval`` offers: every one of ``ttc.strategies.registry``."""

    repeated_sample = "repeated-sample"
    best_of_n = "best-of-n"
    self_consistency = "self-consistency"
    beam_prm = "beam-prm"
    lookahead = "lookahead"
    dvts = "dvts"
    adaptive_consistency = "adaptive-consistency"
    compute_optimal = "compute-optimal"


class DatasetFormat(str, Enum):
    """How to read a dataset file (``auto``: from the first line's fields)."""

    auto = "auto"
    gsm8k = "gsm8k"
    math500 = "math500"
    humaneval = "humaneval"
    coq = "coq"
    lean = "lean"
    smt = "smt"


def _fields(pairs: list[str] | None) -> dict[str, str]:
    from ttc.errors import ConfigError

    out: dict[str, str] = {}
    for pair in pairs or []:
        role, eq, name = pair.partition("=")
        if not eq or not role.strip() or not name.strip():
            raise ConfigError(f"--field takes ROLE=NAME (e.g. question=problem), got {pair!r}")
        out[role.strip()] = name.strip()
    return out


def eval_command(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="A JSONL file, or a sample shipped with ttc: gsm8k-sample, math500-sample, "
            "code-sample, coq-sample, lean-sample, smt-sample, graded-dev, graded-test. "
            "Not with --config."
        ),
    ] = None,
    strategy: Annotated[
        EvalStrategy,
        typer.Option(
            "--strategy",
            "-s",
            help="How to spend the samples. repeated-sample and best-of-n judge samples with "
            "the dataset's reference (an oracle verifier; best-of-n takes --param scorer=prm "
            "for a PRM); self-consistency only votes; beam-prm, lookahead and dvts search step "
            "by step guided by --prm.",
        ),
    ] = EvalStrategy.repeated_sample,
    n: Annotated[
        int, typer.Option("--n", "-n", min=1, help="Samples (or beams) per question.")
    ] = 16,
    prm: PrmOption = None,
    param: ParamOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Run the grid of an experiment file (TOML: datasets x models x strategies x "
            "n) into one store; a rerun resumes every cell.",
        ),
    ] = None,
    levels: Annotated[
        list[int] | None,
        typer.Option("--level", help="Only questions of this level (repeat for several)."),
    ] = None,
    per_level: Annotated[
        int | None,
        typer.Option("--per-level", min=1, help="The first N questions of each level."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="'embedded' (Gemma 3 270M in-process), a .gguf path, groq/<model>, "
            "openai/<model>, vllm-server/<model>@<url>, or any LiteLLM name.",
        ),
    ] = "embedded",
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    api_key_env: ApiKeyEnvOption = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results folder (one SQLite file, many runs).")
    ] = Path("results"),
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run name in the folder (default: dataset-strategy-n-model)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Skip questions this run already stored; --no-resume starts the run over.",
        ),
    ] = True,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Questions in flight at once.")
    ] = 4,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N questions.")
    ] = None,
    data_format: Annotated[
        DatasetFormat, typer.Option("--format", help="How to read the file.")
    ] = DatasetFormat.auto,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="ROLE=NAME",
            help="Read a role from another field, e.g. --field question=problem (roles: "
            "question, answer, id, level, subject, tests, entry_point).",
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Tokens per sample at most.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the first sample.")] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", min=0.0, help="USD for the whole run.")
    ] = None,
    budget_tokens: Annotated[
        int | None, typer.Option("--budget-tokens", min=0, help="Tokens for the whole run.")
    ] = None,
    budget_requests: Annotated[
        int | None, typer.Option("--budget-requests", min=0, help="Requests for the whole run.")
    ] = None,
    budget_seconds: Annotated[
        float | None,
        typer.Option("--budget-seconds", min=0.001, help="Wall seconds for this invocation."),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Spread questions over a Ray cluster (a local one from ray.init(), unless "
            "--ray-address names one).",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDRESS",
            help="The Ray cluster to use ('auto', 'ray://host:10001'); implies --ray.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray workers (default: one a CPU).")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Run a strategy over a dataset, storing each question's result as it finishes.

    Rerunning the same command resumes: stored questions are skipped. Ctrl-C stops cleanly.
    Exit status: 0 all stored; 1 a question failed, or an error that fails every question
    stopped the run; 2 a bad option, dataset or results store; 3 the run's budget stopped it.
    """
    import anyio

    from ttc.cli import build_budget
    from ttc.errors import ConfigError
    from ttc.eval.datasets import load_dataset
    from ttc.eval.experiment import prepare, sampling, select_questions
    from ttc.eval.runner import evaluate
    from ttc.eval.solver import Solver, spec_strategy

    err = Console(stderr=True)
    if config is not None:
        if dataset is not None:
            err.print(
                "[red]error:[/] --config runs the datasets its file names; drop the "
                f"dataset argument {escape(dataset)!r}",
                soft_wrap=True,
            )
            raise typer.Exit(2)
        _run_config(config, json_output, err)
        return
    try:
        if dataset is None:
            raise ConfigError("name a dataset (a JSONL file or a shipped sample), or --config")
        data = load_dataset(
            dataset,
            None if data_format is DatasetFormat.auto else data_format.value,
            fields=_fields(field),
            limit=limit,
        )
        endpoint = endpoint_options(base_url, api_key, api_key_env)
        data = select_questions(data, levels=levels, per_level=per_level)
        spec = strategy_spec(strategy.value, n, prm, param)
        data, llm = prepare(data, model, **endpoint)
        params, step_format = sampling(data, llm, temperature, max_tokens, seed)
        budget = build_budget(budget_usd, budget_tokens, budget_requests, budget_seconds)
        make = spec_strategy(spec, params=params, step_format=step_format)
        run_config = {
            **spec.config(),
            "model": llm.name,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if levels is not None or per_level is not None:
            run_config["levels"] = sorted(levels) if levels else None
            run_config["per_level"] = per_level
        # Ray workers build their own model from the name; locally the one built here runs.
        use_ray: bool | str | None = ray_address or (True if ray else None)
        source: Any = functools.partial(_fitted_model, model, data, endpoint) if use_ray else llm
        solver = Solver(model=source, strategy=make, config=run_config)
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None

    async def go() -> EvalSummary:
        try:
            return await evaluate(
                data,
                solver,
                out,
                run=name,
                concurrency=concurrency,
                budget=budget,
                resume=resume,
                progress=None if json_output else err,
                ray=use_ray,
                workers=workers,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await llm.aclose()

    summary = _run_or_exit(go, out, err)
    _print_summary(summary, out, json_output, err)
    raise typer.Exit(eval_exit_code(summary))


#: ``ttc eval``'s exit status when the run's budget stopped it before every question was done.
EXIT_BUDGET = 3


def eval_exit_code(summary: EvalSummary) -> int:
    """0: every question done; 1: some failed, or an error stopped the run; 3
    (``EXIT_BUDGET``): the run's budget stopped it early (a rerun with more continues). 2 is a
    bad option, dataset or results store; 130 an interrupt."""
    if summary.failed or summary.stopped_by == "error":
        return 1
    if summary.stopped_by == "budget" and not summary.finished:
        return EXIT_BUDGET
    return 0


def _fitted_model(model: str, data: Any, endpoint: dict[str, str]) -> Any:
    """The model as ``prepare`` builds it for ``data`` (a Ray worker's copy)."""
    from ttc.eval.experiment import prepare

    return prepare(data, model, **endpoint)[1]


def _run_config(path: Path, json_output: bool, err: Console) -> None:
    """``ttc eval --config FILE``: every cell of the grid, then one summary line a cell."""

    from ttc.errors import ConfigError
    from ttc.eval.experiment import load_experiment, run_experiment

    try:
        experiment = load_experiment(path)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    summaries = _run_or_exit(
        functools.partial(run_experiment, experiment, progress=None if json_output else err),
        experiment.out,
        err,
    )
    if json_output:
        rows = [
            {
                "run": s.run,
                "questions": s.total,
                "stored": s.stored,
                "new": s.new,
                "accuracy": s.accuracy,
                "tokens": s.usage.total_tokens,
            }
            for s in summaries
        ]
        sys.stdout.write(json.dumps({"results": str(experiment.out), "cells": rows}, indent=2))
        sys.stdout.write("\n")
    else:
        console = Console()
        for s in summaries:
            accuracy = f"{s.accuracy:.3f}" if s.accuracy is not None else "-"
            console.print(
                f"{s.run}: {s.stored}/{s.total} stored ({s.new} new) · accuracy {accuracy}",
                soft_wrap=True,
            )
        console.print(f"report: ttc report {experiment.out}", soft_wrap=True)
    codes = {eval_exit_code(s) for s in summaries}
    raise typer.Exit(1 if 1 in codes else EXIT_BUDGET if EXIT_BUDGET in codes else 0)


def _run_or_exit(main: Callable[[], Awaitable[_T]], out: Path, err: Console) -> _T:
    """``anyio.run(main)`` with ``ttc eval``'s exit statuses for what stops it: an interrupt
    130 (every finished question is stored in ``out``), a ``ConfigError`` 2, another ttc
    error 1."""
    import anyio

    from ttc.errors import ConfigError, TTCError

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        err.print(
            f"[yellow]interrupted:[/] every finished question is stored in {out}; "
            "rerun the same command to continue",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except TTCError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _print_summary(summary: EvalSummary, out: Path, json_output: bool, err: Console) -> None:
    from ttc.eval.report import format_cost

    data = {
        "run": summary.run,
        "results": str(summary.path),
        "questions": summary.total,
        "stored": summary.stored,
        "new": summary.new,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "stopped_by": summary.stopped_by,
        "budget_error": summary.budget_error,
        "error": summary.fatal_error,
        "exit_code": eval_exit_code(summary),
        "accuracy": summary.accuracy,
        "usage": summary.usage.model_dump(mode="json"),
        "elapsed_s": summary.elapsed_s,
    }
    if json_output:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = Console()
    accuracy = f"{summary.accuracy:.3f}" if summary.accuracy is not None else "-"
    console.print(
        f"[bold]{summary.run}[/]: {summary.stored}/{summary.total} questions stored "
        f"({summary.new} new, {summary.skipped} already there) · accuracy {accuracy} · "
        f"{summary.usage.total_tokens:,} tokens · "
        f"{format_cost(summary.usage.cost_usd, summary.usage.unpriced_models)} · "
        f"{summary.elapsed_s:.1f} s",
        soft_wrap=True,
    )
    if summary.stopped_by == "budget":
        err.print(
            f"[yellow]stopped by the run's budget:[/] {escape(summary.budget_error or '')}; "
            f"raise the budget and rerun to continue (exit status {EXIT_BUDGET})",
            soft_wrap=True,
        )
    for qid, error in summary.failed.items():
        err.print(
            f"[red]failed[/] question {escape(qid)}, {escape(error)} (a rerun tries it again)",
            soft_wrap=True,
        )
    if summary.stopped_by == "error":
        err.print(
            f"[red]stopped:[/] {escape(summary.fatal_error or '')}. This error fails every "
            "question alike (a wrong key, model name or URL, or a server that is down), so "
            "the run stopped instead of trying the rest; fix it and rerun to continue",
            soft_wrap=True,
        )
    console.print(f"report: ttc report {out}", soft_wrap=True)


# --------------------------------------------------------------------------------------------
# Reports


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
    return [
        report.run,
        f"{report.questions}/{report.total}" if report.incomplete else str(report.questions),
        str(n),
        _pct(report.accuracy),
        _pct(report.coverage.get(1)),
        _pct(report.coverage.get(n)),
        _pct(report.majority.get(n)),
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


def _level_cells(row: LevelRow) -> list[str]:
    return [
        row.level,
        str(row.questions),
        _pct(row.accuracy),
        _pct(row.pass_at_1),
        _pct(row.coverage),
        _pct(row.majority),
    ]


def print_reports(console: Console, reports: list[RunReport]) -> None:
    """The reports as rich tables: an overview of the runs, then each run's curve and its
    breakdown by level."""
    overview = Table(
        title="runs",
        title_justify="left",
        caption="acc: selected answer right · p@k: pass@k (coverage) · maj@n: majority vote "
        "of all n · tok/q: generated tokens per question · q: stored/of the dataset when "
        "incomplete",
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
        table = Table(title="by samples per question", title_justify="left")
        header, rows = _k_table(report)
        for column in header:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        if report.levels:
            levels = Table(title="by level", title_justify="left")
            for column in _LEVEL_COLUMNS:
                levels.add_column(column, justify="right")
            for level in report.levels:
                levels.add_row(*_level_cells(level))
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
        parts.append(_md_table(*_k_table(report)))
        if report.levels:
            rows = [_level_cells(level) for level in report.levels]
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


def _comparison_rows(series: list[Series]) -> list[list[str]]:
    from ttc.eval.compare import ALL
    from ttc.eval.report import _level_key

    rows = []
    ordered = sorted(series, key=lambda s: (s.level != ALL, _level_key(s.level)))
    for s in ordered:
        if s.kind == "coverage":
            continue
        for point in s.points:
            rows.append(
                [
                    s.name,
                    s.level,
                    str(point.budget),
                    f"{point.tokens:,.0f}",
                    str(point.accuracy),
                    str(point.questions),
                ]
            )
    return rows


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
    rows = _comparison_rows(series)
    if rows and len({r[0] for r in rows}) > 1:
        table = Table(
            title="strategies by generated tokens",
            title_justify="left",
            caption="accuracy of the selected answer, 95% bootstrap interval over questions; "
            "votes@k are over k of one run's samples",
            caption_justify="left",
        )
        for column in _COMPARISON_COLUMNS:
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
    rows = _comparison_rows(series)
    if rows and len({r[0] for r in rows}) > 1:
        parts += ["", "## Strategies by generated tokens", "", _md_table(_COMPARISON_COLUMNS, rows)]
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


def fit_policy_command(
    folder: Annotated[
        Path, typer.Argument(help="A results folder holding several strategies and budgets.")
    ],
    budget: Annotated[
        float,
        typer.Option("--budget", help="Mean generated tokens per question the policy may spend."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the policy (.json or .toml).")
    ] = Path("policy.json"),
    probe_n: Annotated[int, typer.Option("--probe-n", help="Samples in the probe.")] = 4,
    min_questions: Annotated[
        int, typer.Option("--min-questions", help="Fewest questions in a difficulty bin.")
    ] = 5,
    run: Annotated[
        list[str] | None, typer.Option("--run", help="Only these runs (repeat for several).")
    ] = None,
) -> None:
    """Fit a compute-optimal policy (for the compute-optimal strategy) from stored runs.

    Bins questions by the agreement of a probe's samples and picks, per bin, the action (stop
    at the probe, vote to n, or a stored strategy) that answers most questions right within the
    budget. Prints the expected accuracy (in-sample, with a 95% interval) beside the best
    single strategy at the same budget.
    """
    from ttc.errors import ConfigError
    from ttc.eval.policy_fit import fit_policy

    err = Console(stderr=True)
    try:
        fit = fit_policy(
            folder, budget=budget, probe_n=probe_n, min_questions=min_questions, runs=run
        )
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    data = fit.policy.model_dump(mode="json")
    if output.suffix == ".toml":
        output.write_text(_policy_toml(data), encoding="utf-8")
    else:
        output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    out = Console()
    table = Table(title=f"policy for {budget:g} generated tokens a question")
    for column in ("difficulty bin", "questions", "action", "accuracy", "tokens"):
        table.add_column(column)
    for row in fit.per_bin:
        table.add_row(
            row["bin"],
            str(row["questions"]),
            row["action"],
            f"{100 * row['accuracy']:.1f}%",
            f"{row['tokens']:.0f}",
        )
    out.print(table)
    out.print(
        f"policy: {fit.accuracy} % right at {fit.tokens:.0f} tokens a question "
        f"({fit.questions} questions, in-sample)"
    )
    out.print(
        f"best single strategy within the budget: {fit.best_fixed}: {fit.best_fixed_accuracy} % "
        f"at {fit.best_fixed_tokens:.0f} tokens"
    )
    err.print(f"wrote {output}", soft_wrap=True)


def _policy_toml(data: dict[str, Any]) -> str:
    """A policy as TOML (its values are numbers, strings, lists and flat tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = [f"probe_n = {data['probe_n']}", f"difficulty = {value(data['difficulty'])}"]
    lines.append(f"fitted_on = {value(data['fitted_on'])}")
    for b in data["bins"]:
        lines += ["", "[[bins]]"]
        lines += [f"{k} = {value(v)}" for k, v in b.items()]
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``report``, ``salvage`` and ``fit-policy`` to a typer app (the ``ttc``
    command's)."""
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    app.command("salvage")(salvage_command)
    app.command("fit-policy")(fit_policy_command)
