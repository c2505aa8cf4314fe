"""ComputeOptimal: the probe's difficulty estimate routes each question to its bin's action,
the probe's samples are reused, and policy files fail with one clear error."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ttc import BestOfN, Budget, ComputeOptimal, Policy
from ttc.adapters import FunctionModel
from ttc.adapters.function import prompt_text
from ttc.errors import ConfigError
from ttc.scoring import FunctionScorer
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio

#: Per question, the answers its samples give in turn.
SCRIPTS = {
    "easy": ["4"],  # the probe agrees: 1.0
    "medium": ["7", "7", "8", "7"],  # 3 of 4: 0.75
    "hard": ["1", "2", "3", "4", "5", "6", "7", "8"],  # 1 of 4: 0.25
}

POLICY = {
    "probe_n": 4,
    "difficulty": "agreement",
    "bins": [
        {"name": "hard", "low": 0.0, "high": 0.4, "action": "vote", "params": {"n": 12}},
        {"name": "medium", "low": 0.4, "high": 0.8, "action": "adaptive", "params": {"max_n": 20}},
        {"name": "easy", "low": 0.8, "high": 1.0, "action": "stop"},
    ],
}


def scripted() -> FunctionModel:
    counters = {name: itertools.count() for name in SCRIPTS}

    def reply(request: GenerateRequest, i: int) -> str:
        name = prompt_text(request)
        answers = SCRIPTS[name]
        return f"The answer is {answers[next(counters[name]) % len(answers)]}"

    return FunctionModel(reply)


async def test_each_bin_routes_to_its_action_and_reuses_the_probe() -> None:
    model = scripted()
    strategy = ComputeOptimal(model, Policy.parse(POLICY))
    easy = await strategy.run("easy")
    assert easy.routing is not None
    assert (easy.routing.bin, easy.routing.action, easy.routing.difficulty) == ("easy", "stop", 1.0)
    assert len(easy.candidates) == 4 and easy.answer == "4"
    assert easy.usage.requests == 1  # the probe only

    hard = await strategy.run("hard")
    assert hard.routing is not None and hard.routing.bin == "hard"
    assert hard.routing.difficulty == 0.25
    # "vote" with n=12: the probe's 4 samples and 8 more, one vote over all 12.
    assert len(hard.candidates) == 12
    assert [c.answer for c in hard.candidates[:4]] == ["1", "2", "3", "4"]
    assert sum(hard.votes.values()) == 12

    medium = await strategy.run("medium")
    assert medium.routing is not None and medium.routing.bin == "medium"
    # Adaptive sampling goes on from the probe's four samples (7, 7, 8, 7) and stops once
    # the beta rule passes (8 to 2 after ten: 0.967); the probe's samples are the first four
    # candidates and vote.
    assert [c.answer for c in medium.candidates[:4]] == ["7", "7", "8", "7"]
    assert len(medium.candidates) == 10
    assert medium.answer == "7"
    assert medium.confidence is not None and medium.confidence >= 0.95
    assert medium.stopped_by == "settled" and len(medium.candidates) < 20


async def test_a_strategy_bin_pools_its_candidates_with_the_probe() -> None:
    model = scripted()
    policy = Policy.parse(
        {
            "probe_n": 2,
            "bins": [
                {"name": "all", "low": 0.0, "high": 1.0, "action": "best-of-3"},
            ],
        }
    )
    inner = BestOfN(model, n=3)
    strategy = ComputeOptimal(model, policy, strategies={"best-of-3": inner})
    result = await strategy.run("medium")
    # 2 probe samples + 3 from the inner strategy, all voting.
    assert len(result.candidates) == 5
    assert result.usage.requests == 2
    assert sum(result.votes.values()) == 5


async def test_score_difficulty_uses_the_mean_score_and_weights_the_vote() -> None:
    scorer = FunctionScorer(lambda text: 0.9 if "is 8" in text else 0.1, name="judge")
    model = scripted()
    policy = Policy.parse(
        {
            "probe_n": 4,
            "difficulty": "score",
            "bins": [
                {"name": "low", "low": 0.0, "high": 0.5, "action": "stop"},
                {"name": "high", "low": 0.5, "high": 1.0, "action": "stop"},
            ],
        }
    )
    result = await ComputeOptimal(model, policy, scorer=scorer).run("medium")
    assert result.routing is not None
    # Scores 0.1, 0.1, 0.9, 0.1: mean 0.3, the "low" bin.
    assert result.routing.difficulty == pytest.approx(0.3)
    assert result.routing.bin == "low"
    # Weighted vote: 8 has 0.9, 7 has 0.3.
    assert result.answer == "8"
    with pytest.raises(ConfigError, match="scorer"):
        ComputeOptimal(model, policy)


async def test_a_budget_stop_in_the_probe_returns_what_was_paid_for() -> None:
    model = FunctionModel(lambda request, i: "The answer is 3", native_n=False)
    strategy = ComputeOptimal(model, Policy.parse(POLICY))
    result = await strategy.run("q", budget=Budget(requests=2))
    assert result.stopped_by == "budget"
    assert len(result.candidates) == 2 and result.answer == "3"


@pytest.mark.parametrize(
    ("bins", "message"),
    [
        (
            [
                {"name": "a", "low": 0.0, "high": 0.5, "action": "stop"},
                {"name": "b", "low": 0.6, "high": 1.0, "action": "stop"},
            ],
            r"gap between 'a' and 'b': nothing covers \[0.5, 0.6\)",
        ),
        (
            [
                {"name": "a", "low": 0.0, "high": 0.7, "action": "stop"},
                {"name": "b", "low": 0.5, "high": 1.0, "action": "stop"},
            ],
            "overlap",
        ),
        ([{"name": "a", "low": 0.2, "high": 1.0, "action": "stop"}], r"nothing covers \[0, 0.2\)"),
        ([{"name": "a", "low": 0.0, "high": 0.9, "action": "stop"}], r"nothing covers \(0.9, 1\]"),
        ([{"name": "a", "low": 0.5, "high": 0.5, "action": "stop"}], "must be below"),
        ([{"name": "a", "low": 0.0, "high": 1.0, "action": "stop", "n": 3}], "bins.0.n"),
    ],
)
def test_a_policy_with_a_gap_or_a_bad_bin_fails_with_one_clear_error(
    bins: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy.parse({"bins": bins})


def test_unknown_actions_and_parameters_fail_naming_the_bin(tmp_path: Path) -> None:
    model = scripted()
    unknown = Policy.parse({"bins": [{"name": "x", "low": 0, "high": 1, "action": "beam"}]})
    with pytest.raises(ConfigError, match=r"bin 'x': unknown action 'beam'"):
        ComputeOptimal(model, unknown)
    bad = Policy.parse(
        {"bins": [{"name": "x", "low": 0, "high": 1, "action": "vote", "params": {"k": 3}}]}
    )
    with pytest.raises(ConfigError, match=r"bin 'x': action 'vote' has no parameter 'k'"):
        ComputeOptimal(model, bad)
    bad_threshold = Policy.parse(
        {
            "bins": [
                {
                    "name": "x",
                    "low": 0,
                    "high": 1,
                    "action": "adaptive",
                    "params": {"threshold": 2},
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"bin 'x': threshold"):
        ComputeOptimal(model, bad_threshold)


def test_policy_files_load_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text(
        """
probe_n = 4
difficulty = "agreement"

[[bins]]
name = "hard"
low = 0.0
high = 0.5
action = "vote"
params = { n = 16 }

[[bins]]
name = "easy"
low = 0.5
high = 1.0
action = "stop"
""",
        encoding="utf-8",
    )
    policy = Policy.load(toml)
    assert policy.bin_for(0.2).name == "hard" and policy.bin_for(0.5).name == "easy"
    assert policy.bin_for(1.0).name == "easy"
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps(policy.model_dump()), encoding="utf-8")
    assert Policy.load(as_json) == policy
    broken = tmp_path / "broken.toml"
    broken.write_text("probe_n = [", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        Policy.load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.load(tmp_path / "missing.toml")
