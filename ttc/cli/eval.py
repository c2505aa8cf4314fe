"""``ttc eval``, ``ttc fit-policy``: the evaluation commands.

Option names follow ``ttc run``: ``--strategy``, ``--n``, ``--model``, ``--temperature``,
``--max-tokens``, ``--seed``, ``--budget-*``, ``--json``. Heavy modules (llama_cpp, litellm,
matplotlib, ray) load only when a command needs them.
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
    ParamOption,
    PrmOption,
    SeedOption,
    build_budget,
    endpoint_options,
    strategy_spec,
)
from ttc.cli.progress import EvalProgress

if TYPE_CHECKING:
    from ttc.eval.runner import EvalSummary

_T = TypeVar("_T")

__all__ = [
    "EXIT_BUDGET",
    "DatasetFormat",
    "EvalStrategy",
    "eval_command",
    "eval_exit_code",
    "fit_policy_command",
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
    adaptive_allocation = "adaptive-allocation"


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
            "by step guided by --prm; adaptive-allocation spreads the --budget-* options over "
            "all the questions, more samples where votes are unsettled.",
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
    model: ModelOption = "embedded",
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
    max_tokens: MaxTokensOption = None,
    seed: SeedOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_requests: BudgetRequestsOption = None,
    budget_seconds: BudgetSecondsOption = None,
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
        budget = build_budget(budget_usd, budget_tokens, budget_requests, budget_seconds)
        if spec.info.shared_budget and budget is None:  # before a model loads
            raise ConfigError(
                f"--budget-tokens: {spec.name} spends one budget over all the questions; give "
                "it with --budget-tokens (or --budget-usd, --budget-requests, --budget-seconds)"
            )
        data, llm = prepare(data, model, **endpoint)
        params, step_format = sampling(data, llm, temperature, max_tokens, seed)
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
                progress=None if json_output else EvalProgress(err),
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
        functools.partial(
            run_experiment, experiment, progress=None if json_output else EvalProgress(err)
        ),
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
                "generated_tokens": s.usage.completion_tokens,
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
