"""Process reward models in-process with transformers (``MathShepherdPRM``, ``RLHFlowPRM``,
``QwenPRM``) on tiny random-weight Llamas built offline in temporary folders.

Random weights say nothing about quality; these tests check the plumbing that real PRMs depend
on: the scoring positions (one per step), token ids derived from the tokenizer, batched and
padded passes that equal one-by-one passes, the cache, the refusals, and a BeamPRM search.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

# Tests never reach a model hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models

from ttc import BeamPRM, SamplingParams
from ttc.adapters import FunctionModel
from ttc.errors import ConfigError
from ttc.scoring.prm_hf import MathShepherdPRM, QwenPRM, RLHFlowPRM, TransformersPRM
from ttc.types import GenerateRequest

pytestmark = [pytest.mark.hf, pytest.mark.anyio]

CORPUS = [
    "Step 1: Janet has 3 boxes of 5 eggs, so 3 * 5 = 15 eggs.",
    "Step 2: She eats 4 eggs, so 15 - 4 = 11 eggs are left.",
    "Step 3: She sells them for $2 each: 11 * 2 = 22 dollars. The answer is 22.",
    "question: how many apples are left? answer: the answer is five.",
] * 20
SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    " ки",
    "<extra_0>",
]
QUESTION = "Janet has 3 boxes of 5 eggs and eats 4. How many are left?"
STEPS = [
    "Step 1: 3 * 5 = 15 eggs.\n\n",
    "Step 2: 15 - 4 = 11 eggs.\n\n",
    "Step 3: The answer is 11.",
]


def build_tiny(folder: Path, *, template: bool = True, classifier: bool = False) -> Path:
    """A 2-layer Llama (hidden size 64) with a BPE tokenizer holding the PRM markers as
    special tokens; a causal LM, or a 2-label token classifier for Qwen-style PRMs."""
    return tiny_models.build_tiny_llama(
        folder,
        CORPUS,
        SPECIALS,
        vocab_size=320,
        chat_template=tiny_models.CHAT_TEMPLATE if template else None,
        classifier=classifier,
    )


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-prm-lm"))


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-prm-plain"), template=False)


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-prm-cls"), classifier=True)


KINDS = ["shepherd", "rlhflow", "qwen"]


def make(kind: str, lm_dir: Path, cls_dir: Path, **options: object) -> TransformersPRM:
    if kind == "shepherd":
        return MathShepherdPRM(lm_dir, **options)  # type: ignore[arg-type]
    if kind == "rlhflow":
        return RLHFlowPRM(lm_dir, **options)  # type: ignore[arg-type]
    return QwenPRM(cls_dir, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=KINDS)
def prm(request: pytest.FixtureRequest, lm_dir: Path, cls_dir: Path) -> Iterator[TransformersPRM]:
    model = make(request.param, lm_dir, cls_dir).load()
    yield model
    model.close()


# ------------------------------------------------------------------------ formats and ids


def test_math_shepherd_ids_come_from_the_tokenizer(lm_dir: Path) -> None:
    prm = MathShepherdPRM(lm_dir)
    assert prm.step_tag_id is None  # lazy: nothing loaded yet
    prm.load()
    tok = prm.tokenizer
    assert prm.step_tag_id == tok.convert_tokens_to_ids(" ки")
    assert prm.good_id == tok.convert_tokens_to_ids("+")
    assert prm.bad_id == tok.convert_tokens_to_ids("-")
    assert len({prm.step_tag_id, prm.good_id, prm.bad_id}) == 3


def test_math_shepherd_input_and_tag_positions(lm_dir: Path) -> None:
    prm = MathShepherdPRM(lm_dir).load()
    text = prm.text(QUESTION, STEPS)
    assert text == (
        f"{QUESTION} Step 1: 3 * 5 = 15 eggs. ки\nStep 2: 15 - 4 = 11 eggs. ки\n"
        "Step 3: The answer is 11. ки"
    )
    encoded = prm.encode(QUESTION, STEPS)
    assert len(encoded.positions) == len(STEPS)
    assert all(encoded.ids[p] == prm.step_tag_id for p in encoded.positions)
    assert encoded.positions[-1] == len(encoded.ids) - 1  # the last step's tag ends the input
    # a tag written inside a step would be a scoring position it does not own: it is removed
    assert len(prm.encode(QUESTION, ["a ки b\n\n", "c"]).positions) == 2


def test_rlhflow_reads_the_position_before_each_assistant_plus(lm_dir: Path) -> None:
    prm = RLHFlowPRM(lm_dir).load()
    chat = prm.messages(QUESTION, STEPS)
    assert [m["role"] for m in chat] == ["user", "assistant"] * 3
    assert chat[0]["content"] == f"{QUESTION} Step 1: 3 * 5 = 15 eggs."
    assert chat[2]["content"] == "Step 2: 15 - 4 = 11 eggs."
    assert all(m["content"] == "+" for m in chat[1::2])
    encoded = prm.encode(QUESTION, STEPS)
    assert len(encoded.positions) == len(STEPS)
    assistant = prm.tokenizer.convert_tokens_to_ids("<|assistant|>")
    for p in encoded.positions:
        assert encoded.ids[p] == assistant and encoded.ids[p + 1] == prm.good_id
    # a "+" inside a step (arithmetic) is not taken for an assistant answer
    plus = prm.encode(QUESTION, ["1 + 1 = 2\n\n", "2 + 2 = 4"])
    assert len(plus.positions) == 2


def test_qwen_reads_the_separators(cls_dir: Path) -> None:
    prm = QwenPRM(cls_dir).load()
    chat = prm.messages(QUESTION, STEPS)
    assert chat[0] == {
        "role": "system",
        "content": "Please reason step by step, and put your final answer within \\boxed{}.",
    }
    assert chat[1] == {"role": "user", "content": QUESTION}
    assert chat[2]["content"] == (
        "Step 1: 3 * 5 = 15 eggs.<extra_0>Step 2: 15 - 4 = 11 eggs.<extra_0>"
        "Step 3: The answer is 11.<extra_0>"
    )
    encoded = prm.encode(QUESTION, STEPS)
    assert prm.separator_id == prm.tokenizer.convert_tokens_to_ids("<extra_0>")
    assert len(encoded.positions) == len(STEPS)
    assert all(encoded.ids[p] == prm.separator_id for p in encoded.positions)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_qwen_prm(tmp_path_factory.mktemp("tiny-qwen-prm"), CORPUS)


async def test_qwen_prm_checkpoint_loads_its_own_head_without_remote_code(qwen_dir: Path) -> None:
    """A folder saved as Qwen2.5-Math-PRM ships (architecture Qwen2ForProcessRewardModel,
    ``score.0``/``score.2`` head weights): the head is read from the checkpoint, so the scores
    are the checkpoint's, equal to the forward pass written out by hand."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Model

    prm = QwenPRM(qwen_dir, dtype="float32")
    scores = await prm.score_steps(QUESTION, SOLUTIONS)
    assert [len(row) for row in scores] == [len(s) for s in SOLUTIONS]
    assert len({round(v, 4) for row in scores for v in row}) > 3  # a real head, not constant

    weights = load_file(str(qwen_dir / "model.safetensors"))
    decoder = Qwen2Model.from_pretrained(str(qwen_dir), dtype=torch.float32).eval()
    for steps, row in zip(SOLUTIONS, scores):
        encoded = prm.encode(QUESTION, steps)
        with torch.inference_mode():
            hidden = decoder(input_ids=torch.tensor([encoded.ids])).last_hidden_state[0]
            h = torch.relu(hidden @ weights["score.0.weight"].T + weights["score.0.bias"])
            logits = h @ weights["score.2.weight"].T + weights["score.2.bias"]
        expected = logits[encoded.positions].softmax(dim=-1)[:, 1].tolist()
        assert row == pytest.approx(expected, abs=1e-5)


def test_a_qwen_prm_checkpoint_missing_its_head_is_refused(qwen_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "no-head"
    broken.mkdir()
    for file in qwen_dir.iterdir():
        if file.name != "model.safetensors":
            (broken / file.name).write_bytes(file.read_bytes())
    weights = load_file(str(qwen_dir / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("score.2")},
        str(broken / "model.safetensors"),
    )
    with pytest.raises(ConfigError, match=r"score\.2\.weight"):
        QwenPRM(broken).load()


# ------------------------------------------------------------------------ scoring


SOLUTIONS = [STEPS, STEPS[:1], ["Step 1: 3 * 5 = 16 eggs.\n\n", "Step 2: so 12."]]


async def test_scores_are_probabilities_and_batches_equal_single_passes(
    prm: TransformersPRM,
) -> None:
    prm.clear_cache()
    before = prm.forward_passes
    batch = await prm.score_steps(QUESTION, SOLUTIONS)
    assert prm.forward_passes == before + 1  # all solutions in one padded pass
    assert [len(s) for s in batch] == [len(s) for s in SOLUTIONS]
    assert all(0.0 < v < 1.0 for row in batch for v in row)
    prm.clear_cache()
    for steps, row in zip(SOLUTIONS, batch):
        [alone] = await prm.score_steps(QUESTION, [steps])
        assert alone == pytest.approx(row, abs=1e-5)
    # a prefix's step scores do not depend on the steps after it (causal, one pass)
    assert batch[1] == pytest.approx(batch[0][:1], abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
async def test_padding_side_and_batch_size_do_not_change_scores(
    kind: str, lm_dir: Path, cls_dir: Path
) -> None:
    right = make(kind, lm_dir, cls_dir, padding_side="right", cache_size=0)
    left = make(kind, lm_dir, cls_dir, padding_side="left", cache_size=0)
    small = make(kind, lm_dir, cls_dir, batch_size=2, cache_size=0)
    a = await right.score_steps(QUESTION, SOLUTIONS)
    b = await left.score_steps(QUESTION, SOLUTIONS)
    c = await small.score_steps(QUESTION, SOLUTIONS)
    assert small.forward_passes == 2  # three solutions, two per pass
    for x, y, z in zip(a, b, c):
        assert x == pytest.approx(y, abs=1e-5)
        assert x == pytest.approx(z, abs=1e-5)


async def test_rescoring_hits_the_cache(prm: TransformersPRM) -> None:
    prm.clear_cache()
    first = await prm.score_steps(QUESTION, [STEPS])
    passes, scored, hits = prm.forward_passes, prm.steps_scored, prm.cache_hits
    again = await prm.score_steps(QUESTION, [STEPS, STEPS[:2]])
    assert again == [first[0], first[0][:2]]
    assert prm.forward_passes == passes and prm.steps_scored == scored
    assert prm.cache_hits == hits + 5


async def test_concurrent_calls_are_serialized_and_agree(lm_dir: Path) -> None:
    prm = MathShepherdPRM(lm_dir, cache_size=0)
    expected = await prm.score_steps(QUESTION, SOLUTIONS)
    got: list[list[list[float]]] = []

    async def score() -> None:
        got.append(await prm.score_steps(QUESTION, SOLUTIONS))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(score)
    assert len(got) == 4
    for result in got:
        for row, want in zip(result, expected):
            assert row == pytest.approx(want, abs=1e-5)


# ------------------------------------------------------------------------ refusals


def test_configuration_errors(lm_dir: Path, plain_dir: Path, cls_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"step_tag: ' zzqx' .* not a single token .*tokenizer"):
        MathShepherdPRM(lm_dir, step_tag=" zzqx").load()
    with pytest.raises(ConfigError, match="good_token: 'plus' is not a single token"):
        MathShepherdPRM(lm_dir, good_token="plus").load()
    with pytest.raises(ConfigError, match="no chat template"):
        RLHFlowPRM(plain_dir).load()
    with pytest.raises(ConfigError, match="no chat template"):
        QwenPRM(plain_dir).load()
    with pytest.raises(ConfigError, match=r"separator: '<extra_9>' is not a token"):
        QwenPRM(cls_dir, separator="<extra_9>").load()
    with pytest.raises(ConfigError, match=r"no weights for .*score\.weight .*would be random"):
        QwenPRM(lm_dir).load()  # a causal LM has no classification head
    with pytest.raises(ConfigError, match="never downloads"):
        MathShepherdPRM(tmp_path / "peiyi9979/math-shepherd-mistral-7b-prm")
    with pytest.raises(ConfigError, match="batch_size"):
        MathShepherdPRM(lm_dir, batch_size=0)
    with pytest.raises(ConfigError, match="padding_side"):
        MathShepherdPRM(lm_dir, padding_side="middle")


# ------------------------------------------------------------------------ search


async def test_beam_search_with_math_shepherd_end_to_end(lm_dir: Path) -> None:
    def reply(request: GenerateRequest, i: int) -> str:
        if "\n\n" not in request.params.stop:  # the last round writes to the end
            return f"Step {i}: so 15 - 4 = 11. The answer is 11."
        return f"Step {i}: 3 * 5 = 15 eggs.\n\nmore"

    prm = MathShepherdPRM(lm_dir, batch_size=4)
    model = FunctionModel(reply)
    result = await BeamPRM(
        model, prm, n=4, width=2, max_rounds=3, params=SamplingParams(max_tokens=32)
    ).run(QUESTION + "\n")
    assert result.answer == "11"
    assert len(result.candidates) == 4
    for candidate in result.candidates:
        assert candidate.steps is not None and len(candidate.steps) == 3
        assert 0.0 < candidate.scores[prm.name] < 1.0
    assert prm.steps_scored == 4 + 4 + 4  # each round's new steps, each scored once
    assert prm.forward_passes == 3  # one pass per round (4 beams, batch_size 4)
    prm.close()
