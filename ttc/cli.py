"""The ``ttc`` command.

``ttc run "question"`` runs one strategy on one question and prints the answer, the candidates
with their votes and scores, tokens, time and cost. The model defaults to the embedded Gemma 3
270M (llama.cpp, in-process); ``--model groq/llama-3.1-8b-instant`` and the other names of
``ttc.adapters.resolve_model`` pick a provider preset or LiteLLM.

One typer ``app``; each command is a function that parses options and calls plain helpers
(``build_strategy``, ``build_verifier``, ``summarize``...), so more commands can share them.
Heavy modules (llama_cpp, litellm) load only when a model is built.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
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
    from ttc.runtime.budget import Budget
    from ttc.runtime.model import Model
    from ttc.scoring.base import Verifier
    from ttc.strategies.base import Strategy
    from ttc.strategies.registry import StrategySpec
    from ttc.types import Candidate, Result, SamplingParams

__all__ = [
    "StrategyName",
    "app",
    "build_budget",
    "build_params",
    "build_strategy",
    "build_verifier",
    "package_version",
    "summarize",
]

app = typer.Typer(
    name="ttc",
    help="Test-time compute: spend more inference on a question to get a better answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Candidate rows printed before the table says how many more there are.
MAX_ROWS = 32


class StrategyName(str, Enum):
    """The strategies ``ttc run`` offers: every one of ``ttc.strategies.registry``."""

    self_consistency = "self-consistency"
    best_of_n = "best-of-n"
    repeated_sample = "repeated-sample"
    beam_prm = "beam-prm"
    lookahead = "lookahead"
    dvts = "dvts"
    adaptive_consistency = "adaptive-consistency"
    compute_optimal = "compute-optimal"


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ttc {package_version()}\n")
        raise typer.Exit()


def package_version() -> str:
    """The installed package's version (``ttc.__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ttc-sdk")
    except PackageNotFoundError:
        import ttc

        return ttc.__version__


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print ttc's version and exit."
        ),
    ] = False,
) -> None:
    """Test-time compute: spend more inference on a question to get a better answer."""


# --------------------------------------------------------------------------------------------
# Helpers shared by commands


def build_budget(
    usd: float | None = None,
    tokens: int | None = None,
    requests: int | None = None,
    seconds: float | None = None,
) -> Budget | None:
    """A run budget from the ``--budget-*`` options; ``None`` when none is set."""
    from ttc.runtime.budget import Budget

    if usd is None and tokens is None and requests is None and seconds is None:
        return None
    return Budget(usd=usd, tokens=tokens, requests=requests, seconds=seconds)


def build_verifier(gold: str | None) -> Verifier | None:
    """A verifier for a reference answer: exact GSM8K number match when ``gold`` is a number
    (or a GSM8K solution ending in ``#### N``), math equivalence otherwise."""
    from ttc.errors import ConfigError
    from ttc.scoring import GSM8KAnswer, MathAnswer

    if gold is None:
        return None
    try:
        return GSM8KAnswer(gold)
    except ConfigError:
        return MathAnswer(gold)


def build_params(
    model: Model,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> SamplingParams:
    """The model's default sampling parameters with the options given on the command line."""
    from ttc.types import SamplingParams

    update: dict[str, Any] = {}
    if temperature is not None:
        update["temperature"] = temperature
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    if seed is not None:
        update["seed"] = seed
    return SamplingParams.model_validate({**model.params.model_dump(), **update})


def build_strategy(
    spec: StrategySpec,
    model: Model,
    *,
    params: SamplingParams | None = None,
    verifier: Verifier | None = None,
    budget: Budget | None = None,
    step_format: Any = None,
) -> Strategy:
    """The strategy ``spec`` names over ``model``, from ``ttc.strategies.registry``. A
    verifier judges repeated samples, and is best-of-N's scorer; self-consistency only votes
    (candidates are judged afterwards); the searches are guided by the spec's PRM."""
    from ttc.strategies.registry import BuildContext
    from ttc.strategies.registry import build_strategy as build

    context = BuildContext(
        verifier=verifier, params=params, step_format=step_format, extra={"budget": budget}
    )
    return build(spec, model, context)


async def judge(result: Result, question: str, verifier: Verifier) -> bool | None:
    """Mark the candidates no strategy judged, fill in pass@k, and say whether the selected
    answer is correct (``None`` without an answer)."""
    from ttc.eval.metrics import pass_at_k_curve
    from ttc.types import Candidate

    unjudged = [c for c in result.candidates if c.verified is None]
    if unjudged:
        verdicts = await verifier.verify(question, unjudged)
        for candidate, ok in zip(unjudged, verdicts):
            candidate.verified = ok
    if not result.pass_at_k and result.candidates and result.stopped_by is None:
        correct = sum(1 for c in result.candidates if c.verified)
        result.pass_at_k = pass_at_k_curve(len(result.candidates), correct)
    if result.answer is None:
        return None
    probe = Candidate(text=f"The answer is {result.answer}.", answer=result.answer)
    return bool((await verifier.verify(question, [probe]))[0])


def summarize(
    result: Result,
    *,
    question: str,
    model: Model,
    strategy: StrategyName,
    n: int,
    correct: bool | None = None,
) -> dict[str, Any]:
    """Everything ``ttc run`` reports, as JSON-ready data."""
    usage = result.usage
    return {
        "question": question,
        "model": model.name,
        "strategy": strategy.value,
        "n": n,
        "answer": result.answer,
        "correct": correct,
        "stopped_by": result.stopped_by,
        "votes": result.votes,
        "pass_at_k": {str(k): v for k, v in result.pass_at_k.items()},
        "candidates": [
            {
                "answer": c.answer,
                "score": c.score,
                "verified": c.verified,
                "finish_reason": c.finish_reason,
                "completion_tokens": c.completion_tokens,
                "text": c.text,
            }
            for c in result.candidates
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "requests": usage.requests,
            "cost_usd": usage.cost_usd,
            "unpriced_models": sorted(usage.unpriced_models),
        },
        "elapsed_s": result.elapsed_s,
        "errors": result.errors,
    }


async def run_with_progress(
    strategy: Strategy, question: str, model: Model, n: int, console: Console | None
) -> Result:
    """``strategy.run(question)`` with a live display on ``console`` (none when ``None``):
    samples done (requests settled, where each sample is its own request), tokens, time."""
    import anyio
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    if console is None:
        return await strategy.run(question)
    per_sample = not model.capabilities.native_n
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tokens]} tokens"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    start = model.usage
    task = progress.add_task(f"sampling {model.name}", total=n if per_sample else None, tokens=0)
    result: Result | None = None

    def refresh() -> None:
        now = model.usage
        done = now.requests - start.requests
        tokens = now.total_tokens - start.total_tokens
        progress.update(task, completed=min(done, n) if per_sample else 0, tokens=tokens)

    async def watch() -> None:
        while True:
            refresh()
            await anyio.sleep(0.1)

    with progress:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                result = await strategy.run(question)
            finally:
                tg.cancel_scope.cancel()
        refresh()
    assert result is not None
    return result


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _mark(flag: bool | None) -> str:
    return "" if flag is None else "[green]✓[/]" if flag else "[red]✗[/]"


def print_report(console: Console, data: dict[str, Any], candidates: list[Candidate]) -> None:
    """The human-readable ``ttc run`` report."""
    from ttc.scoring.extract import normalize_answer

    votes: dict[str, float] = data["votes"]
    # Best-of-N with a scorer tallies summed scores, not counts.
    tally_name = "votes" if data["strategy"] != StrategyName.best_of_n.value else "scores"
    table = Table(title=f"{len(candidates)} candidates", title_justify="left")
    for column in ("#", "answer", tally_name, "score", "correct", "tokens", "finish"):
        table.add_column(column, no_wrap=column != "answer", min_width=len(column))
    text_width = max(16, console.width - 66)  # what the other columns leave on the line
    table.add_column("text", no_wrap=True, overflow="ellipsis", max_width=text_width)
    for i, c in enumerate(candidates[:MAX_ROWS], 1):
        key = normalize_answer(c.answer) if c.answer is not None else None
        table.add_row(
            str(i),
            c.answer if c.answer is not None else "[dim]none[/]",
            f"{votes[key]:g}" if key is not None and key in votes else "",
            f"{c.score:.3g}" if c.score is not None else "",
            _mark(c.verified),
            str(c.completion_tokens) if c.completion_tokens is not None else "",
            c.finish_reason,
            _one_line(c.text, text_width),
        )
    if len(candidates) > MAX_ROWS:
        table.caption = f"… and {len(candidates) - MAX_ROWS} more (use --json for all)"
    console.print(table)

    if votes:
        tally = Table(title=tally_name, title_justify="left")
        tally.add_column("answer")
        tally.add_column(tally_name, justify="right")
        for answer, count in sorted(votes.items(), key=lambda kv: -kv[1]):
            tally.add_row(answer, f"{count:g}")
        console.print(tally)

    usage = data["usage"]
    answer = data["answer"]
    verdict = {True: " [green](correct)[/]", False: " [red](wrong)[/]", None: ""}[data["correct"]]
    console.print(f"[bold]answer:[/] {answer if answer is not None else '[dim]none[/]'}{verdict}")
    if data["stopped_by"]:
        console.print(f"stopped early: {data['stopped_by']}")
    if data["pass_at_k"]:
        curve = ", ".join(f"pass@{k} {v:.2f}" for k, v in data["pass_at_k"].items())
        console.print(f"coverage: {curve}")
    cost = f"${usage['cost_usd']:.6f}"
    if not usage["cost_usd"] and not usage["unpriced_models"]:
        cost = "free"
    elif usage["unpriced_models"] and not usage["cost_usd"]:
        cost = f"unpriced ({', '.join(usage['unpriced_models'])})"
    elif usage["unpriced_models"]:
        cost += f" (+ unpriced: {', '.join(usage['unpriced_models'])})"
    console.print(
        f"tokens: {usage['total_tokens']} ({usage['prompt_tokens']} prompt, "
        f"{usage['completion_tokens']} completion) · requests: {usage['requests']} · "
        f"time: {data['elapsed_s']:.1f} s · cost: {cost}"
    )
    for error in data["errors"]:
        console.print(f"[yellow]note:[/] {error}")


# --------------------------------------------------------------------------------------------
# Commands


@app.command("run")
def run_command(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    strategy: Annotated[
        StrategyName, typer.Option("--strategy", "-s", help="How to spend the samples.")
    ] = StrategyName.self_consistency,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples to draw.")] = 16,
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
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Tokens per sample at most.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the first sample.")] = None,
    prm: PrmOption = None,
    param: ParamOption = None,
    verify: Annotated[
        str | None,
        typer.Option(
            "--verify",
            metavar="GOLD",
            help="Reference answer: marks candidates correct or wrong and reports pass@k.",
        ),
    ] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", min=0.0)] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", min=0)] = None,
    budget_requests: Annotated[int | None, typer.Option("--budget-requests", min=0)] = None,
    budget_seconds: Annotated[float | None, typer.Option("--budget-seconds", min=0.001)] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
) -> None:
    """Run one strategy on one question and report the answer, candidates, tokens and cost."""
    import anyio

    from ttc.adapters.registry import resolve_model
    from ttc.errors import ConfigError, TTCError

    err = Console(stderr=True)
    try:
        spec = strategy_spec(strategy.value, n, prm, param)
        search = spec.info.search
        endpoint = endpoint_options(base_url, api_key, api_key_env)
        llm, step_format = (
            _search_model(model, endpoint) if search else (resolve_model(model, **endpoint), None)
        )
        params = build_params(llm, temperature, max_tokens, seed)
        verifier = build_verifier(verify)
        budget = build_budget(budget_usd, budget_tokens, budget_requests, budget_seconds)
        chosen = build_strategy(
            spec, llm, params=params, verifier=verifier, budget=budget, step_format=step_format
        )
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    async def go() -> tuple[Result, bool | None]:
        live = None if json_output or not err.is_terminal else err
        result = await run_with_progress(chosen, question, llm, n, live)
        correct = await judge(result, question, verifier) if verifier is not None else None
        await llm.aclose()
        return result, correct

    started = time.perf_counter()
    try:
        result, correct = anyio.run(go)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except TTCError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    result.elapsed_s = result.elapsed_s or time.perf_counter() - started
    data = summarize(result, question=question, model=llm, strategy=strategy, n=n, correct=correct)
    if json_output:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out = Console()
    out.print(f"[bold]{strategy.value}[/] · n={n} · {llm.name}")
    print_report(out, data, result.candidates)


def _search_model(name: str, endpoint: dict[str, Any]) -> tuple[Model, Any]:
    """A model for step-wise search and its step format: a model with its own template
    (the embedded Gemma) is made raw, its template and stops moved to the step format (the
    search must continue partial solutions as they are)."""
    from ttc.adapters.registry import resolve_model
    from ttc.strategies.steps import StepFormat

    llm = resolve_model(name, **endpoint)
    template = getattr(llm, "template", None)
    if not isinstance(template, str):
        return llm, None
    from ttc.adapters.llamacpp import TEMPLATE_STOPS

    llm.template = None  # type: ignore[attr-defined]
    return llm, StepFormat(template=template, end_markers=TEMPLATE_STOPS)


def _register_commands() -> None:
    """Add the commands that live next to their subsystem (``ttc eval``, ``ttc report``)."""
    from ttc.eval.commands import register
    from ttc.labels.cli import register as register_labels

    register(app)
    register_labels(app)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    app()
