"""``ttc collect`` and ``ttc export-labels``: step labels from rollouts, and their exports.

``register(app)`` adds the commands to the ``ttc`` typer app (one line in ``ttc/cli.py``).
``ttc collect`` stores labels in a results folder as ``ttc eval`` stores results (a rerun
resumes), prints the label statistics, and can export at the end; ``ttc export-labels`` writes
a stored run in another format later.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ttc.cli.options import (
    ApiKeyEnvOption,
    ApiKeyOption,
    BaseUrlOption,
    BudgetRequestsOption,
    BudgetSecondsOption,
    BudgetTokensOption,
    BudgetUsdOption,
    MaxTokensOption,
    ModelOption,
    SeedOption,
    build_budget,
    endpoint_options,
)
from ttc.cli.train_prm import PromptChoice, train_prm_command

if TYPE_CHECKING:
    from ttc.labels.collect import CollectSummary
    from ttc.labels.stats import LabelStats

__all__ = ["collect_command", "export_labels_command", "print_stats", "register"]


class Method(str, Enum):
    """How steps are labelled: Math-Shepherd's Monte Carlo estimates of every step, or
    OmegaPRM's binary search for the first wrong step."""

    mc = "mc"
    binary = "binary"


class Format(str, Enum):
    """Export formats (see ``ttc.labels.export``)."""

    trl = "trl"
    math_shepherd = "math-shepherd"
    prm800k = "prm800k"
    ttc = "ttc"


def collect_command(
    dataset: Annotated[
        str,
        typer.Argument(
            help="A JSONL file, or a sample shipped with ttc (gsm8k-sample, graded-dev, ...)."
        ),
    ],
    model: ModelOption = "embedded",
    solutions: Annotated[
        int, typer.Option("--solutions", "-n", min=1, help="Solutions sampled per question.")
    ] = 4,
    rollouts: Annotated[
        int,
        typer.Option("--rollouts", "-k", min=1, help="Completions rolled out from each step."),
    ] = 8,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="mc: hard and soft labels for every step (Math-Shepherd); binary: binary "
            "search for the first wrong step of each wrong solution (OmegaPRM, fewer rollouts).",
        ),
    ] = Method.mc,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results folder (one SQLite file, many runs).")
    ] = Path("labels"),
    name: Annotated[str | None, typer.Option("--name", help="Run name in the folder.")] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Skip questions this run already stored."),
    ] = True,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Questions in flight at once.")
    ] = 2,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N questions.")
    ] = None,
    levels: Annotated[
        list[int] | None,
        typer.Option("--level", help="Only questions of this level (repeat for several)."),
    ] = None,
    per_level: Annotated[
        int | None, typer.Option("--per-level", min=1, help="The first N questions a level.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    max_tokens: MaxTokensOption = None,
    seed: SeedOption = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    api_key_env: ApiKeyEnvOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_requests: BudgetRequestsOption = None,
    budget_seconds: BudgetSecondsOption = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Also write the run's labels to this JSONL file."),
    ] = None,
    export_format: Annotated[
        Format, typer.Option("--export-format", help="The format of --export.")
    ] = Format.trl,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary and statistics as JSON.")
    ] = False,
) -> None:
    """Label the steps of sampled solutions from rollouts (Math-Shepherd / OmegaPRM).

    Each question: sample solutions, cut them into steps, roll out completions from each step
    and check them against the reference. Rerunning the same command resumes. Exit status:
    0 all stored; 1 a question failed; 2 a bad option or dataset; 3 the budget stopped it.
    """
    import anyio

    from ttc.errors import ConfigError
    from ttc.eval.datasets import load_dataset
    from ttc.eval.experiment import prepare, sampling, select_questions
    from ttc.labels.collect import collect_labels
    from ttc.labels.estimate import StepLabeller

    err = Console(stderr=True)
    try:
        data = load_dataset(dataset, limit=limit)
        data = select_questions(data, levels=levels, per_level=per_level)
        data, llm = prepare(data, model, **endpoint_options(base_url, api_key, api_key_env))
        params, step_format = sampling(data, llm, temperature, max_tokens, seed)
        labeller = StepLabeller(
            llm,
            solutions=solutions,
            rollouts=rollouts,
            method=method.value,
            step_format=step_format,
            params=params,
        )
        budget = build_budget(budget_usd, budget_tokens, budget_requests, budget_seconds)
        config = {
            "model": llm.name,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
            "levels": sorted(levels) if levels else None,
            "per_level": per_level,
        }
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None

    async def go() -> CollectSummary:
        try:
            return await collect_labels(
                data,
                labeller,
                out,
                run=name,
                config=config,
                concurrency=concurrency,
                budget=budget,
                resume=resume,
                progress=None if json_output else err,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await llm.aclose()

    try:
        summary = anyio.run(go)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted:[/] finished questions are stored in {out}; rerun")
        raise typer.Exit(130) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    _report(summary, out, export, export_format, json_output, err)


def _report(
    summary: CollectSummary,
    out: Path,
    export: Path | None,
    export_format: Format,
    json_output: bool,
    err: Console,
) -> None:
    from ttc.labels.collect import LabelStore
    from ttc.labels.export import export_labels
    from ttc.labels.stats import label_stats

    with LabelStore(out) as store:
        labelled = store.labels(summary.run)
    stats = label_stats(labelled)
    exported = None
    if export is not None:
        exported = export_labels(labelled, export, export_format.value)
    code = 3 if summary.stopped_by == "budget" else 1 if summary.failed or summary.error else 0
    data: dict[str, Any] = {
        "run": summary.run,
        "results": str(summary.path),
        "questions": summary.total,
        "stored": summary.stored,
        "new": summary.new,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "stopped_by": summary.stopped_by,
        "error": summary.error,
        "usage": summary.usage.model_dump(mode="json"),
        "elapsed_s": summary.elapsed_s,
        "stats": stats.as_dict(),
        "exported_rows": exported,
        "exit_code": code,
    }
    if json_output:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        console = Console()
        console.print(
            f"[bold]{summary.run}[/]: {summary.stored}/{summary.total} questions stored "
            f"({summary.new} new, {summary.skipped} already there) · "
            f"{summary.usage.total_tokens:,} tokens · {summary.elapsed_s:.1f} s",
            soft_wrap=True,
        )
        print_stats(console, stats)
        if exported is not None:
            console.print(f"exported {exported} rows ({export_format.value}) to {export}")
        if summary.stopped_by == "budget":
            err.print(f"[yellow]stopped by the budget:[/] {escape(summary.error or '')}")
        for qid, error in summary.failed.items():
            err.print(f"[red]failed[/] question {escape(qid)}, {escape(error)}", soft_wrap=True)
    raise typer.Exit(code)


def print_stats(console: Console, stats: LabelStats) -> None:
    """The label statistics as a table, and where first errors are."""
    table = Table(title="step labels")
    table.add_column("measure")
    table.add_column("value", justify="right")

    def pct(value: float | None) -> str:
        return f"{100 * value:.1f}%" if value is not None else "-"

    rows = [
        ("questions", str(stats.questions)),
        ("solutions (correct)", f"{stats.solutions} ({stats.correct_solutions})"),
        ("steps per solution", f"{stats.steps_per_solution:.2f}"),
        ("labelled steps", str(stats.labelled_steps)),
        ("positive (hard)", pct(stats.fraction_positive)),
        ("mean soft label", f"{stats.mean_soft:.3f}" if stats.mean_soft is not None else "-"),
        ("rollouts", f"{stats.rollouts:,}"),
        ("solutions with no bad step", str(stats.no_error)),
    ]
    for measure, value in rows:
        table.add_row(measure, value)
    console.print(table)
    if stats.first_errors:
        where = ", ".join(f"step {k}: {v}" for k, v in sorted(stats.first_errors.items()))
        console.print(f"first bad step: {where}", soft_wrap=True)


def export_labels_command(
    results: Annotated[Path, typer.Argument(help="The results folder of a ttc collect run.")],
    output: Annotated[Path, typer.Argument(help="The JSONL file to write.")],
    run: Annotated[
        str | None, typer.Option("--run", help="The run (default: the folder's only one).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Export format.")] = Format.trl,
    soft_threshold: Annotated[
        float | None,
        typer.Option(
            "--soft-threshold",
            min=0.0,
            max=1.0,
            help="Label a step good when its soft estimate reaches this (else hard labels).",
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="The task field of math-shepherd rows.")] = "GSM8K",
    prompt_field: Annotated[
        PromptChoice,
        typer.Option(
            "--prompt-field",
            help="question: the dataset's question; prompt: the text the model was sent (its "
            "template included), what step-wise search gives a PRM.",
        ),
    ] = PromptChoice.question,
) -> None:
    """Write the labels of a stored ttc collect run in a training format."""
    from ttc.errors import ConfigError
    from ttc.labels.collect import LabelStore
    from ttc.labels.export import export_labels

    err = Console(stderr=True)
    try:
        with LabelStore(results, create=False) as store:
            runs = store.label_runs()
            if run is None:
                if len(runs) != 1:
                    raise ConfigError(
                        f"--run: {results} holds {len(runs)} label runs "
                        f"({', '.join(runs) or 'none'}); name one"
                    )
                run = runs[0]
            elif run not in runs:
                raise ConfigError(f"--run: no label run {run!r} in {results} ({', '.join(runs)})")
            labelled = store.labels(run)
        rows = export_labels(
            labelled,
            output,
            fmt.value,
            soft_threshold=soft_threshold,
            task=task,
            prompt_field=prompt_field.value,
        )
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    Console().print(f"exported {rows} rows of {run} ({fmt.value}) to {output}")


def register(app: typer.Typer) -> None:
    """Add ``collect``, ``export-labels`` and ``train-prm`` to a typer app."""
    app.command("collect")(collect_command)
    app.command("export-labels")(export_labels_command)
    app.command("train-prm")(train_prm_command)
