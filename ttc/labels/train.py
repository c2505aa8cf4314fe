"""Training a PRM on exported step labels with TRL's ``PRMTrainer`` (the ``train`` extra).

The model is a token classifier (2 labels) built from a local causal-LM folder; TRL labels the
last token of each step's separator. With ``lora`` the base stays frozen and LoRA adapters
(``peft``) plus the new head are trained, then merged, so the saved folder is a plain
checkpoint: ``ttc.scoring.prm_trained.StepwisePRM`` (a ``TransformersPRM``) loads it as it
loads published PRMs, reading the separator from ``ttc_prm.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc.errors import ConfigError
from ttc.labels.export import LabelledSteps, to_trl_dataset
from ttc.scoring.prm_trained import PRM_CONFIG
from ttc.validation import check_int

__all__ = ["TrainReport", "load_prm_trainer", "train_prm"]


@dataclass(frozen=True)
class TrainReport:
    """What ``train_prm`` did: the checkpoint folder, rows and optimizer steps, last loss."""

    output: Path
    rows: int
    steps: int
    loss: float | None


def load_prm_trainer() -> tuple[Any, Any]:
    """TRL's ``(PRMTrainer, PRMConfig)``: ``trl.experimental.prm`` (TRL 0.29 to 1.0), or
    ``trl`` itself (older releases); a ``ConfigError`` naming the extra otherwise."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    for where in ("trl.experimental.prm", "trl"):
        try:
            module = importlib.import_module(where)
        except ImportError:
            continue
        if hasattr(module, "PRMTrainer") and hasattr(module, "PRMConfig"):
            return module.PRMTrainer, module.PRMConfig
    raise ConfigError(
        "ttc train-prm needs TRL's PRMTrainer (trl>=0.29,<1.1), peft and datasets: "
        "pip install 'ttc-sdk[train]'"
    )


def train_prm(
    data: Sequence[LabelledSteps],
    base_model: str | Path,
    output: str | Path,
    *,
    epochs: float = 1.0,
    max_steps: int = -1,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    lora: bool = True,
    lora_r: int = 16,
    step_separator: str = "\n",
    max_length: int = 1024,
    seed: int = 0,
) -> TrainReport:
    """Train a token-classification PRM on ``data`` from the causal LM at ``base_model`` (a
    local folder; nothing is downloaded) and save it, merged, to ``output``."""
    from ttc.hf_local import model_folder, require_hf

    require_hf("train_prm")
    trainer_class, config_class = load_prm_trainer()
    base = model_folder(base_model, "base_model")
    if not data:
        raise ConfigError("no labelled solutions to train on")
    check_int("batch_size", batch_size, ge=1)
    check_int("lora_r", lora_r, ge=1)
    if not step_separator:
        raise ConfigError("step_separator must not be empty")
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForTokenClassification.from_pretrained(
        str(base), num_labels=2, local_files_only=True
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if lora:
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(
            task_type=TaskType.TOKEN_CLS,
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
            # the new head is trained whole (peft's modules_to_save for TOKEN_CLS), not adapted
            exclude_modules=["score", "classifier"],
        )
    target = Path(output).expanduser()
    with tempfile.TemporaryDirectory(prefix="ttc-train-prm-") as scratch:
        args = config_class(
            output_dir=scratch,
            num_train_epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            step_separator=step_separator,
            max_length=max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=seed,
            use_cpu=not _cuda(),
            disable_tqdm=True,
        )
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=to_trl_dataset(data),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        outcome = trainer.train()
        trained = trainer.model
    if lora:
        trained = trained.merge_and_unload()
    target.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    report = TrainReport(
        target, len(data), int(outcome.global_step), float(losses[-1]) if losses else None
    )
    (target / PRM_CONFIG).write_text(
        json.dumps(
            {
                "format": "trl-stepwise",
                "step_separator": step_separator,
                "base_model": str(base),
                "rows": report.rows,
                "steps": report.steps,
                "loss": report.loss,
                "lora": lora,
            }
        ),
        encoding="utf-8",
    )
    return report


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
