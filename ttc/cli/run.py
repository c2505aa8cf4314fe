"""``ttc run "question"``: one strategy on one question; prints the answer, the candidates with
their votes and scores, tokens, time and cost.

The model defaults to the embedded Gemma 3 270M (llama.cpp, in-process); ``--model
groq/llama-3.1-8b-instant`` and the other names of ``ttc.adapters.resolve_model`` pick a
provider preset or LiteLLM. Heavy modules (llama_cpp, litellm) load only when a model is built.
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
    build_params,
    build_strategy,
    build_verifier,
    endpoint_options,
    strategy_spec,
)
from ttc.cli.progress import run_with_progress
from ttc.server.cli import ProfileOption, SettingsOption

if TYPE_CHECKING:
    from collections.abc import Callable

    from ttc.runtime.model import Model
    from ttc.scoring.base import Verifier
    from ttc.types import Candidate, Result

__all__ = ["StrategyName", "judge", "print_report", "run_command", "summarize"]


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
    adaptive_allocation = "adaptive-allocation"  # refused: it needs many questions (ttc eval)


async def judge(result: Result, question: str, verifier: Verifier) -> bool | None:
    """Mark the candidates no strategy judged, fill in pass@k, and say whether the selected
    answer is correct (``None`` without an answer)."""
    from ttc.scoring.pass_k import pass_at_k_curve
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
            "by_model": {
                name: {
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "requests": u.requests,
                    "cost_usd": u.cost_usd,
                }
                for name, u in sorted(usage.by_model.items())
            },
        },
        "elapsed_s": result.elapsed_s,
        "errors": result.errors,
    }


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


def run_command(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    strategy: Annotated[
        StrategyName, typer.Option("--strategy", "-s", help="How to spend the samples.")
    ] = StrategyName.self_consistency,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples to draw.")] = 16,
    model: ModelOption = "embedded",
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    api_key_env: ApiKeyEnvOption = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    max_tokens: MaxTokensOption = None,
    seed: SeedOption = None,
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
    budget_usd: BudgetUsdOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_requests: BudgetRequestsOption = None,
    budget_seconds: BudgetSecondsOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    settings: SettingsOption = None,
    profile: ProfileOption = None,
) -> None:
    """Run one strategy on one question and report the answer, candidates, tokens and cost."""
    import anyio

    from ttc.adapters.registry import resolve_model
    from ttc.config import settings_and_profile
    from ttc.errors import ConfigError, TTCError

    err = Console(stderr=True)
    try:
        config, spec, model, run_budget = settings_and_profile(settings, profile, model)
        spec = spec or strategy_spec(strategy.value, n, prm, param)
        strategy, n = StrategyName(spec.name), spec.n
        search = spec.info.search
        endpoint = endpoint_options(base_url, api_key, api_key_env)
        resolve = config.resolve if config is not None else resolve_model
        llm, step_format = (
            _search_model(model, endpoint, resolve)
            if search
            else (resolve(model, **endpoint), None)
        )
        params = build_params(llm, temperature, max_tokens, seed)
        if profile is not None and config is not None:  # the profile's, unless given here
            chosen_params = config.params(profile, llm)
            params = params.model_copy(
                update={
                    "temperature": chosen_params.temperature
                    if temperature is None
                    else temperature,
                    "max_tokens": chosen_params.max_tokens if max_tokens is None else max_tokens,
                }
            )
        verifier = build_verifier(verify)
        budget = build_budget(budget_usd, budget_tokens, budget_requests, budget_seconds)
        budget = budget or run_budget
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


def _search_model(
    name: str, endpoint: dict[str, Any], resolve: Callable[..., Model] | None = None
) -> tuple[Model, Any]:
    """A model for step-wise search and its step format: a model with its own template
    (the embedded Gemma) is made raw, its template and stops moved to the step format (the
    search must continue partial solutions as they are). The embedded Gemma's paragraph
    template gives way to its step-wise twin, a line a step (with the paragraph one a whole
    answer is one step)."""
    from ttc.adapters.registry import resolve_model
    from ttc.strategies.steps import StepFormat

    llm: Model = (resolve or resolve_model)(name, **endpoint)
    template = getattr(llm, "template", None)
    if not isinstance(template, str):
        return llm, None
    from ttc.adapters.gemma import (
        GSM8K_FEW_SHOT,
        GSM8K_STEP_DELIMITER,
        GSM8K_STEP_FEW_SHOT,
        TEMPLATE_STOPS,
    )

    llm.template = None  # type: ignore[attr-defined]
    if template == GSM8K_FEW_SHOT:
        return llm, StepFormat(
            delimiter=GSM8K_STEP_DELIMITER, template=GSM8K_STEP_FEW_SHOT, end_markers=TEMPLATE_STOPS
        )
    return llm, StepFormat(template=template, end_markers=TEMPLATE_STOPS)
