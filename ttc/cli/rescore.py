"""``ttc rescore``: score a stored run's samples again with a PRM (``ttc.eval.rescore``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from ttc.cli.options import ParamOption, param_pairs

if TYPE_CHECKING:
    from ttc.eval.rescore import RescoreSummary

__all__ = ["rescore_command"]


def rescore_command(
    folder: Annotated[Path, typer.Argument(help="The results folder holding the run.")],
    run: Annotated[
        str, typer.Option("--run", help="The stored run whose samples are scored again.")
    ],
    prm: Annotated[
        str,
        typer.Option(
            "--prm",
            help="The PRM: arithmetic, step-judge, math-shepherd, qwen, rlhflow, vllm-pooling, "
            "or one ttc train-prm trained: stepwise (prm.model_dir=), hidden-state "
            "(prm.path=), vllm-stepwise (prm.model=).",
        ),
    ],
    param: ParamOption = None,
    aggregation: Annotated[
        str,
        typer.Option(
            "--aggregation", help="Step scores to one: min, prod, last or mean (as best-of-n)."
        ),
    ] = "min",
    selector: Annotated[
        str,
        typer.Option(
            "--selector", help="weighted (sum of scores per answer) or argmax (top sample)."
        ),
    ] = "weighted",
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="The dataset the run was made on (default: the one its configuration names; "
            "ttc eval DATASET runs do not store it).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The model the run was made on, for its prompt template (default: the "
            "stored one).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The new run's name (default: <run>-<prm>-<hash>)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Skip questions already rescored.")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score a stored sampling run's samples again with a PRM and select by its scores.

    The same samples, so the same generated tokens: a paired comparison of the PRM with the
    run's own selection (majority vote, or another PRM), question by question. The result is
    stored as a new run in the same folder (the configuration of best-of-n with scorer=prm on
    those samples, plus rescored_from), so ttc report shows its weighted vote at every k.
    Exit status: 0 done; 1 the PRM failed on some question; 2 a bad option or run.
    """
    from ttc.errors import ConfigError, TTCError

    err = Console(stderr=True)
    try:
        options = {}
        for key, value in param_pairs(param).items():
            if not key.startswith("prm."):
                pair = f"{key}={value}"
                raise ConfigError(f"--param takes prm.KEY=VALUE here (a PRM option), got {pair!r}")
            options[key[4:]] = value
        summary = anyio.run(
            lambda: _rescore(
                folder, run, prm, options, aggregation, selector, dataset, model, name, resume
            )
        )
    except (ConfigError, TTCError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if json_output:
        data = {
            "source": summary.source,
            "run": summary.run,
            "questions": summary.total,
            "rescored": summary.new,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "source_accuracy": summary.source_accuracy,
            "accuracy": summary.accuracy,
            "seconds": round(summary.seconds, 3),
        }
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        out = Console()
        done = summary.skipped + summary.new

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}%"

        out.print(
            f"{escape(summary.run)}: {done}/{summary.total} questions "
            f"({summary.new} scored now, {summary.skipped} already stored, "
            f"{summary.failed} failed) in {summary.seconds:.1f} s"
        )
        out.print(
            f"selected answer right: {pct(summary.accuracy)} rescored, "
            f"{pct(summary.source_accuracy)} in {escape(summary.source)} (the same samples)"
        )
        out.print(f"every k: ttc report {escape(str(folder))}", soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


async def _rescore(
    folder: Path,
    run: str,
    prm: str,
    options: dict[str, str],
    aggregation: str,
    selector: str,
    dataset: str | None,
    model: str | None,
    name: str | None,
    resume: bool,
) -> RescoreSummary:
    from ttc.errors import ConfigError
    from ttc.eval.datasets import load_dataset
    from ttc.eval.experiment import prepare, sampling
    from ttc.eval.rescore import default_name, rescore, rescored_config, rescored_spec
    from ttc.eval.store import ResultsStore
    from ttc.strategies.registry import build_selector, prm_scorer

    with ResultsStore(folder, create=False, readonly=True) as store:
        known = {r.name: r.config for r in store.runs()}
    if run not in known:
        raise ConfigError(f"no run {run!r} in {folder}; its runs: {', '.join(known) or 'none'}")
    config = known[run]
    spec = rescored_spec(config, prm, options, aggregation=aggregation, selector=selector)
    dataset = dataset or config.get("dataset")
    model = model or config.get("model")
    if not dataset:
        raise ConfigError(f"--dataset: run {run!r} does not say which dataset it was made on")
    if not model:
        raise ConfigError(f"--model: run {run!r} does not say which model it was made on")
    fmt = config.get("format")
    data = load_dataset(dataset, fmt if isinstance(fmt, str) and fmt != "auto" else None)
    data, llm = prepare(data, str(model))
    try:
        _, step_format = sampling(data, llm)
        scorer = prm_scorer(spec, llm, step_format)
        chosen = build_selector(spec.param("selector"))
        assert chosen is not None
        return await rescore(
            folder,
            run,
            scorer,
            chosen,
            data,
            config=rescored_config(run, config, spec),
            name=name or default_name(run, spec),
            resume=resume,
        )
    finally:
        await llm.aclose()
