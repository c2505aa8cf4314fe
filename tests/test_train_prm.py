"""``train_prm``: TRL's PRMTrainer accepts the stepwise export, trains a tiny offline Llama for
a few steps (with and without LoRA), and the saved checkpoint loads in ``StepwisePRM`` (a
``TransformersPRM``) and scores every step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("datasets")

import tiny_models

from ttc.errors import ConfigError
from ttc.labels.export import LabelledSteps
from ttc.labels.train import load_prm_trainer, train_prm
from ttc.scoring.prm_trained import PRM_CONFIG, StepwisePRM

pytestmark = [pytest.mark.hf, pytest.mark.anyio]

try:
    load_prm_trainer()
except ConfigError:  # pragma: no cover - a TRL without PRMTrainer
    pytest.skip("TRL's PRMTrainer is not installed", allow_module_level=True)

CORPUS = ["What is 2 + 3? 2 + 3 = 5. The answer is 5.", "2 + 3 = 6. The answer is 6."] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
DATA = [
    LabelledSteps("What is 2 + 3?", ("2 + 3 = 5.", "The answer is 5."), (True, True)),
    LabelledSteps("What is 2 + 3?", ("2 + 3 = 6.", "The answer is 6."), (False, False)),
] * 4


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("tiny-base"), CORPUS, SPECIALS, chat_template=None
    )


@pytest.mark.parametrize("lora", [True, False])
async def test_prm_trainer_trains_and_the_checkpoint_scores_steps(
    base: Path, tmp_path: Path, lora: bool
) -> None:
    report = train_prm(DATA, base, tmp_path / "prm", max_steps=3, batch_size=4, lora=lora, lora_r=4)
    assert report.steps == 3 and report.rows == 8 and report.loss is not None
    saved = json.loads((tmp_path / "prm" / PRM_CONFIG).read_text())
    assert saved["format"] == "trl-stepwise" and saved["step_separator"] == "\n"
    assert not (tmp_path / "prm" / "adapter_config.json").exists()  # LoRA merged in

    prm = StepwisePRM(tmp_path / "prm")
    (good, bad) = await prm.score_steps("What is 2 + 3?", [list(DATA[0].steps), ["2 + 3 = 6."]])
    assert len(good) == 2 and len(bad) == 1
    assert all(0.0 <= v <= 1.0 for v in good + bad)
    encoded = prm.encode("What is 2 + 3?", list(DATA[0].steps))
    newline = prm.tokenizer.encode("\n", add_special_tokens=False)[-1]
    assert [encoded.ids[p] for p in encoded.positions] == [newline, newline]


def test_training_needs_data_and_a_local_folder(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no labelled"):
        train_prm([], base, tmp_path / "x")
    with pytest.raises(ConfigError, match="base_model"):
        train_prm(DATA, tmp_path / "nowhere", tmp_path / "x")
