"""``ttc train-prm``: a PRM from collected step labels, with TRL's PRMTrainer or the light head.

``--method trl`` fine-tunes a token classifier from a local causal-LM folder (``--base``) with
TRL's ``PRMTrainer`` (LoRA by default) and saves a checkpoint ``StepwisePRM`` loads;
``--method head`` fits a logistic head on the frozen hidden states of the policy model
(``--embedder``: the embedded Gemma through llama.cpp, a ``.gguf`` or a Hugging Face folder) in
minutes on a CPU, and saves a folder ``HiddenStatePRM.load`` reads.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["load_training_data", "train_prm_command"]


class TrainMethod(str, Enum):
    trl = "trl"
    head = "head"


class PromptChoice(str, Enum):
    """What a training row's question is (see ``ttc.labels.export.PromptField``)."""

    question = "question"
    prompt = "prompt"


class DataFormat(str, Enum):
    """How to read DATA when it is a file (a folder is a ttc results folder)."""

    ttc = "ttc"
    trl = "trl"
    math_shepherd = "math-shepherd"
    prm800k = "prm800k"


def load_training_data(source: Path, run: str | None, fmt: str) -> list[Any]:
    """Labelled questions (a results folder, or a ``ttc`` export) or ``LabelledSteps`` rows
    (the other export formats)."""
    from ttc.errors import ConfigError
    from ttc.labels.collect import LabelStore
    from ttc.labels.export import read_export

    if source.is_dir():
        with LabelStore(source, create=False) as store:
            runs = store.label_runs()
            if run is None:
                if len(runs) != 1:
                    raise ConfigError(
                        f"--run: {source} holds {len(runs)} label runs "
                        f"({', '.join(runs) or 'none'}); name one"
                    )
                run = runs[0]
            elif run not in runs:
                raise ConfigError(f"--run: no label run {run!r} in {source}")
            return list(store.labels(run))
    if not source.is_file():
        raise ConfigError(f"DATA: no such file or folder {source}")
    return read_export(source, fmt)


def train_prm_command(
    data: Annotated[
        Path,
        typer.Argument(help="A ttc collect results folder, or an exported JSONL file."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the PRM.")],
    method: Annotated[
        TrainMethod,
        typer.Option(
            "--method",
            help="trl: TRL's PRMTrainer on a token classifier from --base; head: a logistic "
            "head on the policy model's frozen hidden states (minutes on a CPU).",
        ),
    ] = TrainMethod.head,
    base: Annotated[
        Path | None,
        typer.Option("--base", help="trl: the local causal-LM folder to start from."),
    ] = None,
    embedder: Annotated[
        str,
        typer.Option(
            "--embedder",
            help="head: 'embedded' (Gemma 3 270M via llama.cpp), a .gguf file, or a Hugging "
            "Face folder.",
        ),
    ] = "embedded",
    run: Annotated[str | None, typer.Option("--run", help="The run of a results folder.")] = None,
    data_format: Annotated[
        DataFormat, typer.Option("--format", help="The format of a DATA file.")
    ] = DataFormat.ttc,
    soft_threshold: Annotated[
        float | None,
        typer.Option(
            "--soft-threshold", min=0.0, max=1.0, help="Good when the soft label reaches this."
        ),
    ] = None,
    prompt_field: Annotated[
        PromptChoice,
        typer.Option(
            "--prompt-field",
            help="trl: train on the dataset's question, or on the prompt the model was sent "
            "(its template included: what step-wise search will give the PRM).",
        ),
    ] = PromptChoice.question,
    epochs: Annotated[float, typer.Option(min=0.0, help="trl: training epochs.")] = 1.0,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="trl: optimizer steps (-1: by epochs).")
    ] = -1,
    learning_rate: Annotated[float, typer.Option("--lr", help="trl: learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="trl: batch size.")] = 4,
    lora: Annotated[
        bool, typer.Option("--lora/--no-lora", help="trl: train LoRA adapters (merged).")
    ] = True,
    l2: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="head: L2 penalty of the head (default: the best of 0.1 to 10,000 by step AUC "
            "over 5 folds of whole questions).",
        ),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=8, help="head: tokens a pass reads at most.")
    ] = 256,
) -> None:
    """Train a process reward model on collected step labels."""
    from ttc.errors import ConfigError
    from ttc.labels.estimate import LabelledQuestion
    from ttc.labels.export import labelled_steps

    err = Console(stderr=True)
    out = Console()
    try:
        rows = load_training_data(data, run, data_format.value)
        native = [r for r in rows if isinstance(r, LabelledQuestion)]
        if method is TrainMethod.trl:
            from ttc.labels.train import train_prm

            if base is None:
                raise ConfigError("--base: name the local model folder to train from")
            steps = (
                list(
                    labelled_steps(
                        native,
                        soft_threshold=soft_threshold,
                        prompt_field=prompt_field.value,
                    )
                )
                if native
                else rows
            )
            report = train_prm(
                steps,
                base,
                output,
                epochs=epochs,
                max_steps=max_steps,
                learning_rate=learning_rate,
                batch_size=batch_size,
                lora=lora,
            )
            out.print(
                f"trained on {report.rows} solutions, {report.steps} steps, last loss "
                f"{report.loss}; load it with StepwisePRM({str(report.output)!r})"
            )
            return
        if len(native) != len(rows):
            raise ConfigError(
                "--method head needs the prompts and steps as generated: a results folder "
                "or a ttc export (--format ttc)"
            )
        from ttc.labels.stats import roc_auc
        from ttc.scoring.prm_trained import (
            head_from_features,
            hidden_state_features,
            select_l2,
        )

        embedding = _embedder(embedder, max_tokens)
        features, labels, owners = hidden_state_features(
            native, embedding, soft_threshold=soft_threshold
        )
        if l2 is None:
            try:
                l2, means = select_l2(features, labels, owners)
            except ConfigError as exc:  # too few questions or labels to validate on
                l2 = 1.0
                out.print(f"L2 penalty 1 (not chosen by validation: {exc})")
            else:
                tried = ", ".join(
                    f"{k:g}: {'-' if v is None else f'{v:.3f}'}" for k, v in means.items()
                )
                out.print(f"L2 penalty {l2:g} (mean step AUC over folds of questions: {tried})")
        prm = head_from_features(features, labels, embedding, l2=l2)
        prm.save(output)
        scores = prm.score_states(features)  # the training steps, not embedded again
        auc = roc_auc(scores, labels)
        shown = f"{auc:.3f}" if auc is not None else "-"
        out.print(
            f"trained a head on {len(labels)} steps (training AUC {shown}); load it with "
            f"HiddenStatePRM.load({str(output)!r})"
        )
    except ConfigError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _embedder(spec: str, max_tokens: int) -> Any:
    from ttc.scoring.prm_trained import embedder_spec, load_embedder

    return load_embedder(embedder_spec(spec), max_tokens=max_tokens)
