"""The light PRM (a logistic head on frozen hidden states at each step's end): trained from
labelled questions, saved and loaded, and guiding BestOfN (weighted), BeamPRM and Lookahead
through the interfaces published PRMs use. A tiny random-weight Llama built offline gives the
hidden states: these tests check the plumbing and that the head learns a separable signal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models

from ttc.adapters.function import FunctionModel, prompt_text
from ttc.errors import ConfigError
from ttc.labels import LabelledQuestion, LabelledSolution, StepLabel
from ttc.labels.stats import roc_auc
from ttc.scoring.prm import PRMScorer
from ttc.scoring.prm_trained import (
    HiddenStatePRM,
    TransformersEmbedder,
    fit_hidden_state_prm,
    fit_logistic,
)
from ttc.scoring.selectors import WeightedMajority
from ttc.strategies.beam_prm import BeamPRM
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.lookahead import Lookahead
from ttc.strategies.steps import StepFormat
from ttc.types import GenerateRequest

pytestmark = [pytest.mark.hf, pytest.mark.anyio]

CORPUS = [
    "Q: pick one\nA: yes\nThe answer is 1.",
    "Q: pick one\nA: no\nThe answer is 2.",
    "Q: choose a path\nA: maybe yes or no",
] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
Q = "Q: pick one\nA:"
GOOD = [" yes\n", "The answer is 1."]
BAD = [" no\n", "The answer is 2."]
LINES = StepFormat(delimiter="\n")


def solution(steps: list[str], good: bool) -> LabelledSolution:
    return LabelledSolution(
        text="".join(steps),
        correct=good,
        steps=[StepLabel(text=s, hard=good, soft=float(good), rollouts=4) for s in steps],
    )


def labelled(question: str = Q) -> list[LabelledQuestion]:
    return [
        LabelledQuestion(
            id=str(i),
            question=question,
            prompt=question,
            reference="1",
            solutions=[solution(GOOD, True), solution(BAD, False)],
        )
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> TransformersEmbedder:
    folder = tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("tiny-policy"), CORPUS, SPECIALS, chat_template=None
    )
    return TransformersEmbedder(folder, max_tokens=64)


@pytest.fixture(scope="module")
def prm(embedder: TransformersEmbedder) -> HiddenStatePRM:
    return fit_hidden_state_prm(labelled(), embedder)


def test_logistic_regression_separates_separable_points() -> None:
    features = [[0.0, 1.0], [0.2, 0.9], [1.0, 0.1], [0.9, 0.0]]
    weights, bias, mean, scale = fit_logistic(features, [True, True, False, False], l2=0.1)
    head = HiddenStatePRM(_NoEmbedder(), weights, bias, mean, scale)
    scores = head.score_states(features)
    assert scores[0] > 0.9 and scores[1] > 0.9 and scores[2] < 0.1 and scores[3] < 0.1


def test_roc_auc_counts_ties_as_half() -> None:
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert roc_auc([0.1, 0.9], [True, True]) is None


async def test_the_head_learns_the_step_labels(prm: HiddenStatePRM) -> None:
    good, bad = await prm.score_steps(Q, [GOOD, BAD])
    assert min(good) > 0.9 and max(bad) < 0.1
    assert roc_auc(good + bad, [True] * 2 + [False] * 2) == 1.0


async def test_a_saved_head_loads_and_scores_the_same(prm: HiddenStatePRM, tmp_path: Path) -> None:
    prm.save(tmp_path / "head")
    loaded = HiddenStatePRM.load(tmp_path / "head")  # builds its own embedder from the spec
    again = await loaded.score_steps(Q, [GOOD, BAD])
    first = await prm.score_steps(Q, [GOOD, BAD])
    assert [v for row in again for v in row] == pytest.approx([v for row in first for v in row])
    with pytest.raises(ConfigError, match="no trained PRM"):
        HiddenStatePRM.load(tmp_path / "missing")


def test_training_needs_good_and_bad_steps(embedder: TransformersEmbedder) -> None:
    only_good = [
        LabelledQuestion(
            id="1", question=Q, prompt=Q, reference="1", solutions=[solution(GOOD, True)]
        )
    ]
    with pytest.raises(ConfigError, match="both"):
        fit_hidden_state_prm(only_good, embedder)


def step_model() -> FunctionModel:
    """First steps: no, yes, no, no (one in four is right); after yes the answer is 1, after
    no it is 2. Majority voting picks 2; the PRM should pick 1."""

    def reply(request: GenerateRequest, index: int) -> str:
        prefix = prompt_text(request)[len(Q) :]
        if not prefix:
            return [" no\n", " yes\n", " no\n", " no\n"][index % 4]
        return "The answer is 1." if "yes" in prefix else "The answer is 2."

    return FunctionModel(reply)


def whole_model() -> FunctionModel:
    def reply(request: GenerateRequest, index: int) -> str:
        return "".join(GOOD) if index % 4 == 1 else "".join(BAD)

    return FunctionModel(reply)


async def test_the_trained_prm_guides_weighted_best_of_n(prm: HiddenStatePRM) -> None:
    majority = await BestOfN(whole_model(), 4).run(Q)
    assert majority.answer == "2"
    weighted = BestOfN(
        whole_model(),
        4,
        scorer=PRMScorer(prm, delimiter="\n"),
        selector=WeightedMajority(),
    )
    assert (await weighted.run(Q)).answer == "1"


async def test_the_trained_prm_guides_beam_search_and_lookahead(prm: HiddenStatePRM) -> None:
    beam = await BeamPRM(step_model(), prm, n=4, beam_width=2, max_rounds=3, step_format=LINES).run(
        Q
    )
    assert beam.answer == "1"
    ahead = Lookahead(step_model(), prm, n=4, beam_width=2, k=1, max_rounds=3, step_format=LINES)
    assert (await ahead.run(Q)).answer == "1"


class _NoEmbedder(TransformersEmbedder):
    """An embedder that is never asked for states (the head is scored on given features)."""

    def __init__(self) -> None:  # no model folder
        self.max_tokens = 8

    def spec(self) -> dict[str, object]:
        return {"backend": "none"}


def test_the_l2_penalty_is_chosen_on_held_out_questions_not_on_their_steps() -> None:
    """With many noise dimensions and few steps, a weak penalty fits the training steps and
    ranks new questions' steps badly; validation by whole questions prefers a strong one."""
    import random

    from ttc.scoring.prm_trained import L2_GRID, select_l2

    rng = random.Random(0)
    features: list[list[float]] = []
    labels: list[bool] = []
    owners: list[int] = []
    for question in range(12):
        for _ in range(12):
            good = rng.random() < 0.4
            signal = (0.8 if good else -0.8) + rng.gauss(0, 1)
            features.append([signal] + [rng.gauss(0, 1) for _ in range(120)])
            labels.append(good)
            owners.append(question)
    l2, means = select_l2(features, labels, owners)
    assert set(means) == set(L2_GRID) and all(v is not None for v in means.values())
    assert l2 >= 10.0 and means[l2] == max(v for v in means.values() if v is not None)
    assert means[l2] > means[0.1]  # type: ignore[operator]
    with pytest.raises(ConfigError, match="two questions or more"):
        select_l2(features[:12], labels[:12], owners[:12])
    with pytest.raises(ConfigError, match="must be >= 0"):
        select_l2(features, labels, owners, grid=(-1.0,))
