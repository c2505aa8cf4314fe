"""Step-wise search: BeamPRM, Lookahead and DVTS with a scripted model and a scripted PRM (the
exact bookkeeping of every round), step generation, the PRM cache and aggregation, the
arithmetic PRM, and one end-to-end run on the embedded Gemma model."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttc import DVTS, BeamPRM, Budget, Lookahead, Result, SamplingParams
from ttc.adapters import FunctionModel
from ttc.errors import BudgetExceeded, ConfigError, ServerError
from ttc.runtime.model import Capabilities
from ttc.runtime.retry import RetryPolicy
from ttc.scoring import ArithmeticPRM, ProcessRewardModel, aggregate
from ttc.scoring.prm import check_arithmetic, safe_eval
from ttc.strategies import StepFormat
from ttc.strategies.search import Beam
from ttc.strategies.steps import StepGenerator
from ttc.types import Completion, GenerateRequest, Message

pytestmark = pytest.mark.anyio

Q = "Q: what now?\n"


@dataclass
class Call:
    """One request the scripted model saw: the steps it continued, n, and its parameters."""

    steps: list[str]
    n: int
    stop: tuple[str, ...]
    temperature: float
    names: list[str] = field(default_factory=list)


class Tree:
    """A scripted model: the k-th sample of a request continuing the step named ``p`` is named
    ``p + str(k)`` (``"1"``, ``"1.0"`` ...); a greedy rollout step is ``p + "r"``.

    A step's text is ``"<name> v=<score>"``: the scripted PRM reads the score from it. Names in
    ``answers`` state an answer (which completes the beam); a request without the delimiter
    among its stops (the last round) writes the final answer ``"The answer is <name>."``.
    """

    def __init__(self, scores: dict[str, float] | None = None, answers: Sequence[str] = ()):
        self.scores = scores or {}
        self.answers = set(answers)
        self.calls: list[Call] = []
        self._request: GenerateRequest | None = None
        self.model = FunctionModel(self.reply)

    def name_of(self, step: str) -> str:
        return step.split(" ", 1)[0]

    def reply(self, request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str) and request.prompt.startswith(Q)
        steps = [s + "\n\n" for s in request.prompt[len(Q) :].split("\n\n")[:-1]]
        if request is not self._request:
            self._request = request
            p = request.params
            self.calls.append(Call(steps, request.n, p.stop, p.temperature))
        call = self.calls[-1]
        parent = self.name_of(steps[-1]) + "." if steps else ""
        name = parent + ("r" if call.temperature == 0 else str(len(call.names)))
        call.names.append(name)
        text = f"{name} v={self.scores.get(name, 0.5)}"
        if "\n\n" not in request.params.stop:
            return f"{text} The answer is {len(name)}."
        if name in self.answers:
            return f"{text} The answer is {name}."
        return text + "\n\nnot part of the step"


class ScriptedPRM(ProcessRewardModel):
    """Reads each step's score from its text (``v=0.7``); records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[list[str]]] = []

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        self.batches.append([list(s) for s in solutions])
        return [[_read_score(step) for step in steps] for steps in solutions]


def _read_score(step: str) -> float:
    found = re.findall(r"v=([\d.]+)", step)
    return float(found[0]) if found else 0.5


def _beam(beam_id: int, value: float) -> Beam:
    return Beam(id=beam_id, steps=[f"s{beam_id}"], value=value)


def survivors(result: Result, number: int) -> list[str]:
    assert result.tree is not None
    record = result.tree[number]
    return [b["step"].split(" ")[0] for b in record["beams"] if b["status"] == "kept"]


# ------------------------------------------------------------------------ BeamPRM


async def test_beam_search_keeps_n_over_m_and_expands_each_m_ways() -> None:
    scores = {
        "0": 0.1,
        "1": 0.9,
        "2": 0.6,
        "3": 0.3,
        "1.0": 0.2,
        "1.1": 0.4,
        "2.0": 0.8,
        "2.1": 0.1,
    }
    tree = Tree(scores)
    prm = ScriptedPRM()
    result = await BeamPRM(tree.model, prm, n=4, width=2, max_rounds=3).run(Q)
    calls = tree.calls
    # Round 1: N first steps in one request; rounds 2 and 3: M continuations of N/M beams.
    assert [(c.steps and tree.name_of(c.steps[-1]), c.n) for c in calls] == [
        ([], 4),
        ("1", 2),
        ("2", 2),
        ("1.1", 2),
        ("2.0", 2),
    ]
    assert survivors(result, 0) == ["1", "2"]
    assert survivors(result, 1) == ["1.1", "2.0"]
    # Prefixes are byte-identical: each survivor's steps, each ending with the delimiter.
    assert calls[1].steps == ["1 v=0.9\n\n"]
    assert calls[3].steps == ["1 v=0.9\n\n", "1.1 v=0.4\n\n"]
    # The last round generates to the end: no step delimiter among the stops.
    assert all("\n\n" in c.stop for c in calls[:3]) and all(c.stop == () for c in calls[3:])
    assert len(result.candidates) == 4
    assert all(c.steps is not None and len(c.steps) == 3 for c in result.candidates)
    assert result.candidates[0].text == "".join(result.candidates[0].steps or [])
    assert result.stopped_by is None
    # One PRM call a round, over that round's new beams.
    assert [len(batch) for batch in prm.batches] == [4, 4, 4]
    assert result.usage.requests == 5


async def test_finished_beams_are_set_aside_and_kept() -> None:
    # "2" states an answer in round 1: it is finished, not expanded, and still a candidate.
    tree = Tree({"0": 0.1, "1": 0.3, "2": 0.99, "3": 0.2}, answers=["2"])
    result = await BeamPRM(tree.model, ScriptedPRM(), n=4, width=2, max_rounds=2).run(Q)
    assert survivors(result, 0) == ["1", "3"]
    assert [tree.name_of(c.steps[-1]) for c in tree.calls[1:]] == ["1", "3"]
    assert result.tree is not None
    statuses = {b["step"].split(" ")[0]: b["status"] for b in result.tree[0]["beams"]}
    assert statuses == {"0": "pruned", "1": "kept", "2": "finished", "3": "kept"}
    # Five beams finished, N = 4 of them (the best by score) are the candidates.
    texts = [c.text for c in result.candidates]
    assert texts == [
        "2 v=0.99 The answer is 2.",
        "1 v=0.3\n\n1.0 v=0.5 The answer is 3.",
        "1 v=0.3\n\n1.1 v=0.5 The answer is 3.",
        "3 v=0.2\n\n3.0 v=0.5 The answer is 3.",
    ]
    # Weighted best-of-N over the finished beams: three beams say 3 (1.5 in all), one says 2.
    assert result.answer == "3"
    assert result.votes == pytest.approx({"2": 0.99, "3": 1.5})


async def test_search_ends_once_n_beams_have_finished() -> None:
    tree = Tree(answers=["0", "1", "2", "3"])
    result = await BeamPRM(tree.model, ScriptedPRM(), n=4, width=2).run(Q)
    assert len(tree.calls) == 1 and len(result.candidates) == 4
    assert all(c.steps is not None and len(c.steps) == 1 for c in result.candidates)


async def test_one_round_generates_to_the_end() -> None:
    tree = Tree()
    result = await BeamPRM(tree.model, ScriptedPRM(), n=2, width=2, max_rounds=1).run(Q)
    assert [(c.n, c.stop) for c in tree.calls] == [(2, ())]
    assert [c.text for c in result.candidates] == [
        "0 v=0.5 The answer is 1.",
        "1 v=0.5 The answer is 1.",
    ]


def test_n_must_be_a_multiple_of_width() -> None:
    model = Tree().model
    with pytest.raises(ConfigError, match=r"n must be a multiple of width: n=6 .* width=4"):
        BeamPRM(model, ScriptedPRM(), n=6, width=4)
    with pytest.raises(ConfigError, match="multiple of width"):
        DVTS(model, ScriptedPRM(), n=5, width=2)
    with pytest.raises(ConfigError, match="aggregation"):
        BeamPRM(model, ScriptedPRM(), aggregation="max")
    with pytest.raises(ConfigError, match="prm must be"):
        BeamPRM(model, lambda s: 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be"):
        Lookahead(model, ScriptedPRM(), k=-1)


async def test_duplicates_removed_when_asked() -> None:
    def same(request: GenerateRequest, i: int) -> str:
        steps = request.prompt.count("\n\n") if isinstance(request.prompt, str) else 0
        if "\n\n" not in request.params.stop:
            return "The answer is 3."
        return f"step {steps} v=0.5\n\n"

    for remove, expanded in ((True, 1), (False, 2)):
        model = FunctionModel(same)
        result = await BeamPRM(
            model, ScriptedPRM(), n=4, width=2, max_rounds=2, remove_duplicates=remove
        ).run(Q)
        assert result.tree is not None
        first = [b["status"] for b in result.tree[0]["beams"]]
        if remove:
            assert first == ["kept", "duplicate", "duplicate", "duplicate"]
        else:
            assert first == ["kept", "kept", "pruned", "pruned"]
        assert result.usage.requests == 1 + expanded
        # Every round samples N: a lone survivor is continued N ways, not M.
        assert len(result.tree[1]["beams"]) == 4


async def test_uneven_survivors_share_the_n_samples_best_first() -> None:
    # Three survivors split N = 4 samples 1 + 2 + 1, the extra one to the best; in a run where
    # "1" finishes in round 1, the N/M = 2 best unfinished beams are continued M ways each.
    tree = Tree({"0": 0.1, "1": 0.9, "2": 0.6, "3": 0.3}, answers=["1"])
    strategy = BeamPRM(tree.model, ScriptedPRM(), n=4, width=2, max_rounds=2)
    assert [
        (b.id, k) for b, k in strategy.spread([_beam(1, 0.2), _beam(2, 0.7), _beam(3, 0.5)])
    ] == [
        (1, 1),
        (2, 2),
        (3, 1),
    ]
    result = await strategy.run(Q)
    assert [(tree.name_of(c.steps[-1]), c.n) for c in tree.calls[1:]] == [("2", 2), ("3", 2)]
    assert result.stopped_by is None


async def test_budget_keeps_the_paid_samples_of_a_cut_fan_out() -> None:
    # No native n: each sample is its own request. Of three requests, round 1's N = 2 first
    # steps take two, and only one of round 2's two samples of the survivor is paid for; that
    # sample is kept, scored, and answers.
    tree = Tree({"0": 0.1, "1": 0.9, "1.0": 0.8})
    model = FunctionModel(tree.reply, native_n=False)
    result = await BeamPRM(model, ScriptedPRM(), n=2, width=2, budget=Budget(requests=3)).run(Q)
    assert result.stopped_by == "budget"
    assert result.usage.requests == 3
    assert [c.text for c in result.candidates] == ["1 v=0.9\n\n1.0 v=0.8\n\n"]
    assert result.best is not None and result.best.score == pytest.approx(0.8)


async def test_budget_stop_returns_the_best_so_far_marked() -> None:
    # Two requests pay for round 1 and half of round 2: the steps round 2 paid for are kept
    # and scored, and the answer comes from the deepest partial beams: the children of "1"
    # and the survivor "2" that the budget could not continue.
    tree = Tree({"0": 0.1, "1": 0.9, "2": 0.6, "3": 0.3, "1.0": 0.2, "1.1": 0.4})
    strategy = BeamPRM(tree.model, ScriptedPRM(), n=4, width=2, budget=Budget(requests=2))
    result = await strategy.run(Q)
    assert result.stopped_by == "budget"
    assert [c.text for c in result.candidates] == [
        "2 v=0.6\n\n",
        "1 v=0.9\n\n1.0 v=0.2\n\n",
        "1 v=0.9\n\n1.1 v=0.4\n\n",
    ]
    assert [c.score for c in result.candidates] == pytest.approx([0.6, 0.2, 0.4])
    assert result.errors and "budget" in result.errors[0]
    assert result.usage.requests == 2
    assert result.tree is not None and result.tree[-1]["stopped_by"] == "budget"
    assert [b["step"][:3] for b in result.tree[-1]["beams"]] == ["1.0", "1.1"]
    # A beam that had finished is preferred to partial ones.
    tree = Tree({"0": 0.1, "1": 0.9, "2": 0.6, "3": 0.3}, answers=["3"])
    result = await BeamPRM(tree.model, ScriptedPRM(), n=4, width=2, budget=Budget(requests=2)).run(
        Q
    )
    assert result.stopped_by == "budget"
    assert [c.text for c in result.candidates] == ["3 v=0.3 The answer is 3."]
    assert result.answer == "3"


class BudgetAfter(ScriptedPRM):
    """A PRM whose budget pays for ``calls`` scoring calls, then refuses."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        if len(self.batches) >= self.calls:
            raise BudgetExceeded("requests", self.calls, self.calls, 1, "run")
        return await super()._score_steps(question, solutions)


async def test_beams_finished_in_a_round_the_prm_could_not_pay_for_are_kept_unscored() -> None:
    # Round 2 generates to the end (every beam finishes), then the PRM's budget is spent: the
    # finished beams are still the answer, without scores, and the run says why it stopped.
    tree = Tree({"0": 0.1, "1": 0.9, "2": 0.6, "3": 0.3})
    result = await BeamPRM(tree.model, BudgetAfter(1), n=4, width=2, max_rounds=2).run(Q)
    assert result.stopped_by == "budget"
    assert len(result.candidates) == 4 and all(c.score is None for c in result.candidates)
    assert all(c.text.endswith("The answer is 3.") for c in result.candidates)
    assert result.answer == "3"


async def test_provider_failure_with_nothing_paid_raises_the_typed_error() -> None:
    def down(request: GenerateRequest, i: int) -> str:
        raise ServerError("down", status=503)

    model = FunctionModel(down, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ServerError):
        await BeamPRM(model, ScriptedPRM(), n=2, width=2).run(Q)


async def test_tree_is_on_the_result_and_in_its_json() -> None:
    tree = Tree({"1": 0.9})
    result = await BeamPRM(tree.model, ScriptedPRM(), n=2, width=2, max_rounds=2).run(Q)
    data = json.loads(result.model_dump_json())
    assert [r["round"] for r in data["tree"]] == [0, 1]
    first = data["tree"][0]["beams"][1]
    assert first == {
        "id": 2,
        "parent": 0,
        "step": "1 v=0.9\n\n",
        "end": "delimiter",
        "step_score": 0.9,
        "value": 0.9,
        "status": "kept",
    }
    assert data["candidates"][0]["steps"][0] == "1 v=0.9\n\n"


async def test_chat_models_take_the_chat_step_protocol_and_chat_prompts_are_refused() -> None:
    chat_only = FunctionModel(lambda r, i: "x", capabilities=Capabilities(completions=False))
    assert BeamPRM(chat_only, ScriptedPRM(), n=2, width=2).generator.path == "chat_protocol"
    strategy = BeamPRM(Tree().model, ScriptedPRM(), n=2, width=2)
    assert strategy.generator.path == "completion"
    with pytest.raises(ConfigError, match="chat step protocol"):
        await strategy.run([Message(role="user", content="hi")])
    from ttc.adapters import OpenAICompatible

    chat = OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert BeamPRM(chat, ScriptedPRM(), n=2, width=2).generator.path == "chat_protocol"
    neither = FunctionModel(
        lambda r, i: "x", capabilities=Capabilities(completions=False, chat=False)
    )
    with pytest.raises(ConfigError, match="neither a text nor a chat endpoint"):
        BeamPRM(neither, ScriptedPRM(), n=2, width=2)
    if importlib.util.find_spec("llama_cpp") is not None:
        from ttc.adapters import LlamaCpp

        # A template wraps the whole prompt: the step prompt could not be continued.
        with pytest.raises(ConfigError, match="raw=True"):
            DVTS(LlamaCpp(), ScriptedPRM(), n=2, width=2)


async def test_beam_search_over_an_openai_compatible_completions_endpoint() -> None:
    # The real HTTP client against the loopback provider: native n, stop strings on the wire,
    # the delimiter put back so each round's prompts extend the survivors byte for byte.
    import random

    from ttc.adapters import OpenAICompatible
    from ttc.testing import FakeProvider

    prompts: list[str] = []

    def reply(prompt: str, index: int, rng: random.Random) -> str:
        prompts.append(prompt)
        depth = prompt.count("\n\n")
        if depth >= 2:
            return "So the answer is 7."
        wrong = index % 2  # odd samples get their sum wrong
        return f"Step {depth}: {index} + 1 = {index + 1 + wrong}\n\nStep more"

    async with FakeProvider("openai", reply=reply, api_key="sk-test") as server:
        model = OpenAICompatible(
            "m", base_url=server.base_url, api_key="sk-test", endpoint="completions"
        )
        async with model:
            result = await BeamPRM(
                model, ArithmeticPRM(), n=4, width=2, params=SamplingParams(max_tokens=32)
            ).run(Q)
    assert result.answer == "7" and result.stopped_by is None
    assert result.usage.requests == 5  # one request of n=4, then 2 + 2 of n=2
    # Only steps with right sums survived, and every prompt extends one of them exactly.
    assert result.tree is not None
    kept = [b["step"] for b in result.tree[0]["beams"] if b["status"] == "kept"]
    assert kept == ["Step 0: 0 + 1 = 1\n\n", "Step 0: 2 + 1 = 3\n\n"]
    assert {p for p in prompts if p.count("\n\n") == 1} == {Q + k for k in kept}
    assert all(c.score == 0.5 and c.text.endswith("So the answer is 7.") for c in result.candidates)


# ------------------------------------------------------------------------ Lookahead


async def test_lookahead_rolls_out_greedily_and_scores_at_the_end() -> None:
    # On its own step "0" looks best, but its greedy rollout goes wrong; "1"'s goes right.
    scores = {"0": 0.9, "1": 0.2, "0.r": 0.1, "1.r": 0.8}
    tree = Tree(scores)
    prm = ScriptedPRM()
    result = await Lookahead(tree.model, prm, n=2, width=2, k=1, max_rounds=2).run(Q)
    rollouts = [c for c in tree.calls if c.temperature == 0]
    assert [(tree.name_of(c.steps[-1]), c.n, "\n\n" in c.stop) for c in rollouts] == [
        ("0", 1, True),
        ("1", 1, True),
    ]
    assert survivors(result, 0) == ["1"]
    assert result.tree is not None
    beams = result.tree[0]["beams"]
    assert [b["rollout"] for b in beams] == [["0.r v=0.1\n\n"], ["1.r v=0.8\n\n"]]
    assert [b["value"] for b in beams] == [0.1, 0.8]  # the PRM score at the rollout's end
    assert [b["step_score"] for b in beams] == [0.9, 0.2]
    # Rollouts are scored with their beam's steps in one PRM call a round.
    assert prm.batches[0] == [["0 v=0.9\n\n", "0.r v=0.1\n\n"], ["1 v=0.2\n\n", "1.r v=0.8\n\n"]]
    # The final round's beams are complete: nothing to roll out.
    assert [c.temperature for c in tree.calls] == [0.8, 0.0, 0.0, 0.8]


async def test_lookahead_with_k_zero_is_beam_search() -> None:
    scores = {"0": 0.1, "1": 0.9, "2": 0.6, "3": 0.3, "1.0": 0.2, "1.1": 0.4, "2.0": 0.8}
    beam_tree, look_tree = Tree(scores), Tree(scores)
    beam = await BeamPRM(beam_tree.model, ScriptedPRM(), n=4, width=2, max_rounds=3).run(Q)
    look = await Lookahead(look_tree.model, ScriptedPRM(), n=4, width=2, k=0, max_rounds=3).run(Q)
    assert [c.text for c in look.candidates] == [c.text for c in beam.candidates]
    assert look.answer == beam.answer
    assert [c.steps for c in look_tree.calls] == [c.steps for c in beam_tree.calls]
    assert look.tree is not None and beam.tree is not None
    assert [r["beams"] for r in look.tree] == [r["beams"] for r in beam.tree]


# ------------------------------------------------------------------------ DVTS


async def test_dvts_subtrees_are_independent() -> None:
    # Both subtrees start from the same prompt; the first request's proposals all outscore the
    # second's. Beam search would keep only the first request's; DVTS keeps each subtree's own
    # best, so the second subtree goes on from its 0.2 step.
    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        if "\n\n" not in request.params.stop:
            return "The answer is 5."
        depth = request.prompt.count("\n\n")
        if depth == 0:
            table = {0: "a v=0.9", 1: "b v=0.8", 2: "c v=0.2", 3: "d v=0.1"}
            return table[i] + "\n\n"
        return f"deeper{depth}-{i} v=0.5\n\n"

    prompts: list[str] = []
    model = FunctionModel(reply)
    original = model.generate

    async def spy(prompt: object, *args: object, **kwargs: object) -> list[Completion]:
        assert isinstance(prompt, str)
        prompts.append(prompt)
        return await original(prompt, *args, **kwargs)  # type: ignore[arg-type]

    model.generate = spy  # type: ignore[method-assign]
    result = await DVTS(model, ScriptedPRM(), n=4, width=2, max_rounds=2).run(Q)
    assert prompts[:2] == [Q, Q]  # one request per subtree, the same prefix
    assert sorted(prompts[2:]) == [Q + "a v=0.9\n\n", Q + "c v=0.2\n\n"]
    assert result.tree is not None
    chosen = {b["subtree"]: b["step"] for b in result.tree[0]["beams"] if b["status"] == "chosen"}
    assert chosen == {0: "a v=0.9\n\n", 1: "c v=0.2\n\n"}
    # Output: each subtree's M last-step alternatives, N in all.
    assert len(result.candidates) == 4
    assert {(c.steps or [""])[0] for c in result.candidates} == {"a v=0.9\n\n", "c v=0.2\n\n"}


async def test_dvts_budget_stop_keeps_each_subtrees_newest_paid_alternatives() -> None:
    # Two subtrees; three requests pay for round 1 (one each) and one subtree's round 2.
    tree = Tree({"0": 0.2, "1": 0.7})
    result = await DVTS(tree.model, ScriptedPRM(), n=4, width=2, budget=Budget(requests=3)).run(Q)
    assert result.stopped_by == "budget" and result.usage.requests == 3
    assert sorted(c.text for c in result.candidates) == [
        "0 v=0.2\n\n",
        "1 v=0.7\n\n",
        "1 v=0.7\n\n1.0 v=0.5\n\n",
        "1 v=0.7\n\n1.1 v=0.5\n\n",
    ]
    assert result.tree is not None and result.tree[-1]["stopped_by"] == "budget"


async def test_dvts_subtree_ends_on_its_chosen_step() -> None:
    tree = Tree({"0": 0.9, "1": 0.1}, answers=["0"])
    result = await DVTS(tree.model, ScriptedPRM(), n=2, width=2, max_rounds=5).run(Q)
    assert len(tree.calls) == 1  # the best step stated the answer: the subtree is done
    assert [c.text for c in result.candidates] == ["0 v=0.9 The answer is 0.", "1 v=0.1\n\n"]
    assert result.answer == "0"


# ------------------------------------------------------------------------ steps


async def test_step_generation_keeps_the_delimiter_and_names_the_end() -> None:
    replies = {
        0: Completion(text="a = 1", finish_reason="stop"),
        1: Completion(text="runs on and on", finish_reason="length"),
        2: Completion(text="  ", finish_reason="stop"),
        3: Completion(text="So \\boxed{4}", finish_reason="stop"),
        4: Completion(text="done. Question: next", finish_reason="stop"),
    }
    model = FunctionModel(lambda r, i: replies[i])
    generator = StepGenerator(model, StepFormat(delimiter="\n", end_markers=("Question:",)))
    steps = await generator.next_steps("Q", ["first\n"], 5, SamplingParams())
    assert [(s.text, s.end, s.done) for s in steps] == [
        ("a = 1\n", "delimiter", False),
        ("runs on and on", "length", True),
        ("  ", "empty", True),
        ("So \\boxed{4}", "answer", True),
        ("done. ", "marker", True),
    ]
    params = generator.params_for(SamplingParams(stop=("END",)), to_end=False)
    assert params.stop == ("END", "\n")
    assert generator.params_for(SamplingParams(), to_end=True).stop == ("Question:",)
    assert generator.format.prompt("Q", ["a\n", "b\n"]) == "Qa\nb\n"
    with pytest.raises(ConfigError, match="template"):
        StepFormat(template="no placeholder")


# ------------------------------------------------------------------------ PRMs


async def test_prm_cache_scores_each_step_once() -> None:
    prm = ScriptedPRM()
    first = await prm.score_steps("q", [["a v=0.1", "b v=0.2"], ["a v=0.1", "c v=0.3"]])
    assert first == [[0.1, 0.2], [0.1, 0.3]]
    assert prm.steps_scored == 3  # "a" once, though both solutions carry it
    again = await prm.score_steps("q", [["a v=0.1", "b v=0.2", "d v=0.4"], ["a v=0.1"]])
    assert again == [[0.1, 0.2, 0.4], [0.1]]
    assert prm.steps_scored == 4  # only "d" was new
    assert prm.batches[-1] == [["a v=0.1", "b v=0.2", "d v=0.4"]]  # with its prefix as context
    assert await prm.score_steps("q", [["a v=0.1"]]) == [[0.1]]
    assert len(prm.batches) == 2  # everything cached: no call at all
    await prm.score_steps("other question", [["a v=0.1"]])
    assert prm.steps_scored == 5  # the question is part of the key


def test_aggregation() -> None:
    scores = [0.5, 0.8, 0.4]
    assert aggregate(scores, "last") == 0.4
    assert aggregate(scores, "min") == 0.4
    assert aggregate(scores, "prod") == pytest.approx(0.16)
    assert aggregate(scores, "mean") == pytest.approx(1.7 / 3)
    assert aggregate([], "last") == 0.0


async def test_arithmetic_prm_scores_right_wrong_and_unchecked_steps() -> None:
    prm = ArithmeticPRM()
    steps = [
        "She sells 3 * 5 = 15 eggs.\n\n",
        "Then 12 + 7 = 20 eggs.\n\n",
        "Each gets 20 / 4 = 5 and $1,250.50 + $49.50 = $1,300 in all.\n\n",
        "So she is happy.\n\n",
        "It takes 2/2=<<2/2=1>>1 bolt\n\n",
        "It takes 2/2=<<2/2=3>>1 bolt\n\n",
        "5 x 3 = 15, and 10 / 3 = 3.33, then 2 * 3 = 6 * 2 = 12\n\n",
        "2 * 3 = 6 * 2 = 13\n\n",
    ]
    [scores] = await prm.score_steps("q", [steps])
    assert scores == [1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0]
    assert ArithmeticPRM(neutral=0.7).score_step("No numbers here.") == 0.7
    assert check_arithmetic("80,000+50,000=$<<80000+50000=130000>>130,000") == [
        ("<<80000+50000=130000>>", True),
        ("80,000+50,000=$130,000", True),
    ]
    assert check_arithmetic("10 / 3 = 3") == [("10 / 3 = 3", False)]
    assert check_arithmetic("5 / 0 = 0") == [("5 / 0 = 0", False)]


def test_safe_eval_allows_only_arithmetic() -> None:
    assert safe_eval("(3 + 4) * 2 - 6 / 3") == 12.0
    assert safe_eval("-2 + +3") == 1.0
    for unsafe in (
        "__import__('os').system('true')",
        "2 ** 1000000",
        "x + 1",
        "[1, 2]",
        "len('a')",
        "1 if 1 else 2",
        "True + 1",
        "1 < 2",
        "'a' * 3",
        "1 // 2",
        "(1).real",
    ):
        with pytest.raises(ValueError):
            safe_eval(unsafe)
    with pytest.raises(ValueError, match="too long"):
        safe_eval("1 + " * 100 + "1")
    # Such text in a step is not checkable: neutral, and never executed.
    assert ArithmeticPRM().score_step("__import__('os') = 1 and 2 ** 3 = 8") == 0.5


# ------------------------------------------------------------------------ end to end

# The GSM8K dev sample shipped with the package (the first lines of the shared dev split).
GSM8K_DEV = Path(__file__).resolve().parents[1] / "ttc" / "eval" / "data" / "gsm8k_sample.jsonl"


@pytest.fixture(scope="module")
def gemma() -> object:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama_cpp (the local extra)")
    from ttc.adapters import LlamaCpp

    return LlamaCpp(raw=True, seed=7)


@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("strategy", "index"), [(BeamPRM, 0), (Lookahead, 1), (DVTS, 1)], ids=["beam", "look", "dvts"]
)
async def test_search_on_the_embedded_gemma_with_the_arithmetic_prm(
    gemma: object, strategy: type[BeamPRM] | type[DVTS], index: int
) -> None:
    from ttc.adapters import LlamaCpp
    from ttc.adapters.gemma import GSM8K_FEW_SHOT

    assert isinstance(gemma, LlamaCpp)
    question = json.loads(GSM8K_DEV.read_text().splitlines()[index])["question"]
    # The few-shot answers are one paragraph: a sentence is a step, and "\n\n" or
    # "Question:" (the model starting the next example) ends the solution.
    fmt = StepFormat(delimiter=". ", template=GSM8K_FEW_SHOT, end_markers=("\n\n", "Question:"))
    search = strategy(
        gemma,
        ArithmeticPRM(),
        n=4,
        width=2,
        max_rounds=3,
        params=SamplingParams(temperature=0.8, max_tokens=40, seed=1),
        step_format=fmt,
    )
    result = await search.run(question.strip())
    assert result.tree is not None and 1 <= len(result.tree) <= 3
    assert len(result.candidates) >= 1 and result.stopped_by is None
    for candidate in result.candidates:
        assert candidate.steps and candidate.text == "".join(candidate.steps)
        assert candidate.score is not None
        assert all(step.endswith(". ") for step in candidate.steps[:-1])
    assert result.answer is not None
    assert result.usage.completion_tokens > 0
    json.loads(result.model_dump_json())


@pytest.mark.llamacpp
@pytest.mark.parametrize("kind", ["step_judge", "qwen_prm"])
async def test_beam_search_on_the_embedded_gemma_with_other_prm_kinds(
    gemma: object, kind: str, tmp_path: Path
) -> None:
    """The same search guided by the generative step judge (the embedded model judging its
    own steps through the runtime) and by a transformers PRM (a tiny Qwen2.5-Math-PRM-format
    checkpoint, random weights: the plumbing, not the quality)."""
    from ttc.adapters import LlamaCpp
    from ttc.adapters.gemma import GSM8K_FEW_SHOT
    from ttc.scoring import QwenPRM, StepJudge

    assert isinstance(gemma, LlamaCpp)
    prm: ProcessRewardModel
    if kind == "step_judge":
        prm = StepJudge(gemma)
    else:
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
        import tiny_models

        corpus = ["Janet has 3 boxes of 5 eggs, so 3 * 5 = 15 eggs. The answer is 15."] * 4
        prm = QwenPRM(tiny_models.build_tiny_qwen_prm(tmp_path / "prm", corpus))
    question = json.loads(GSM8K_DEV.read_text().splitlines()[0])["question"]
    fmt = StepFormat(delimiter=". ", template=GSM8K_FEW_SHOT, end_markers=("\n\n", "Question:"))
    search = BeamPRM(
        gemma,
        prm,
        n=2,
        width=2,
        max_rounds=2,
        params=SamplingParams(temperature=0.8, max_tokens=24, seed=2),
        step_format=fmt,
    )
    result = await search.run(question.strip())
    assert result.stopped_by is None and result.candidates
    assert all(c.score is not None and 0.0 <= c.score <= 1.0 for c in result.candidates)
    assert prm.steps_scored > 0
    if kind == "step_judge":  # one judge request a scored step, counted in the run's usage
        assert result.usage.requests >= prm.steps_scored + 1
