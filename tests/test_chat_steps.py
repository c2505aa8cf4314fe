"""Step-wise search through chat endpoints: the chat step protocol, continuing the final
assistant message, and the generative step judge, against the loopback provider server."""

from __future__ import annotations

import itertools
import logging
import math
import random
import zlib
from dataclasses import dataclass, field

import pytest

from ttc import DVTS, BeamPRM, Budget, Lookahead, SamplingParams
from ttc.adapters import FunctionModel, Groq, OpenAI, OpenAICompatible, VLLMServer
from ttc.adapters.function import prompt_text
from ttc.errors import ConfigError
from ttc.runtime.model import Capabilities
from ttc.scoring import StepJudge
from ttc.strategies import StepFormat
from ttc.strategies.steps import DONE_REPLY, StepGenerator, step_path
from ttc.testing import FakeProvider
from ttc.types import Completion, GenerateRequest, TokenLogprob

pytestmark = pytest.mark.anyio

Q = "What is 3 + 4?"
KEY = "sk-test"
PARAMS = SamplingParams(max_tokens=32)


@dataclass
class Script:
    """The server's replies. A judge prompt gets ``"incorrect"`` for a step containing
    ``wrong`` and ``"correct"`` otherwise. A step prompt gets one step: ``"Step <depth>: ..."``
    (every other one wrong, counted across the whole run so fanned-out samples differ), and at
    depth 2 the answer, which completes the beam."""

    judged: list[str] = field(default_factory=list)
    step_prompts: list[str] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def reply(self, prompt: str, index: int, rng: random.Random) -> str:
        if "Step to check:" in prompt:
            step = prompt.split("Step to check:\n", 1)[1].split("\n\nIs the step", 1)[0]
            self.judged.append(step)
            return "incorrect" if "wrong" in step else "correct"
        self.step_prompts.append(prompt)
        so_far = prompt.split("Steps so far:\n", 1)[1].split("\n\n", 1)[0]
        depth = 0 if so_far.startswith("(none") else prompt.count("Step ")
        if depth >= 2:
            return "So the answer is 7."
        k = next(self.counter)
        return f"Step {depth}: {3 + k} {'wrong' if k % 2 else 'ok'}\n\nand more text"


async def test_beam_prm_with_step_judge_through_groq_fans_out_and_reads_verdicts() -> None:
    script = Script()
    async with FakeProvider("groq", reply=script.reply, api_key=KEY) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY)
        judge = StepJudge(model)
        strategy = BeamPRM(model, judge, n=4, width=2, params=PARAMS, remove_duplicates=False)
        async with model:
            result = await strategy.run(Q)

    assert strategy.generator.path == "chat_protocol"
    assert not judge.use_logprobs  # Groq refuses logprobs: the verdict text is read
    assert result.answer == "7" and result.stopped_by is None
    # No native n: every sample is its own request, N = 4 a round for 3 rounds. One judge
    # request per new (prefix, step): 4 + 4, then 2, as the two children of each survivor
    # both state the answer (the same step after the same prefix is judged once).
    gen, judged = 4 * 3, 4 + 4 + 2
    assert len(script.step_prompts) == gen
    assert len(script.judged) == judged
    assert server.stats.requests == server.stats.ok == gen + judged
    assert server.stats.choices == gen + judged
    # The judge's calls are the run's: usage counts them, and tokens match the server's bill.
    assert result.usage.requests == gen + judged
    assert result.usage.total_tokens == server.stats.billed_tokens
    # Verdict text: 1.0 for "correct", 0.0 for "incorrect"; only the right steps survived.
    assert result.tree is not None
    first = result.tree[0]["beams"]
    assert sorted(b["step_score"] for b in first) == [0.0, 0.0, 1.0, 1.0]
    kept = [b for b in first if b["status"] == "kept"]
    assert len(kept) == 2 and all("ok" in b["step"] and b["step_score"] == 1.0 for b in kept)
    # Each reply is one step (the text after the delimiter dropped), the delimiter added back.
    assert all(b["step"].startswith("Step 0: ") and b["step"].endswith(" ok\n\n") for b in kept)
    assert all(c.steps[-1] == "So the answer is 7." for c in result.candidates)
    # The second round's prompts hand back one of the kept first steps.
    depth1 = [p for p in script.step_prompts if p.count("Step ") == 1]
    assert {b["step"].strip() for b in kept} == {
        p.split("Steps so far:\n", 1)[1].split("\n\n", 1)[0] for p in depth1
    }


async def test_beam_prm_with_step_judge_through_openai_native_n_and_logprobs() -> None:
    script = Script()
    async with FakeProvider("openai", reply=script.reply, api_key=KEY) as server:
        model = OpenAI("m", base_url=server.base_url, api_key=KEY)
        judge = StepJudge(model)
        strategy = BeamPRM(model, judge, n=4, width=2, params=PARAMS, remove_duplicates=False)
        async with model:
            result = await strategy.run(Q)

    assert strategy.generator.path == "chat_protocol"  # OpenAI's chat endpoint
    assert judge.use_logprobs and judge.params.logprobs and judge.params.top_logprobs
    assert result.answer == "7" and result.stopped_by is None
    # Native n: one request of n=4, then one of n=2 per survivor in each of two rounds.
    # The judge: one request (n=1) per new (prefix, step), 4 + 4 + 2 as on Groq.
    assert server.stats.requests == 1 + 2 + 2 + 10
    assert server.stats.choices == 12 + 10
    assert result.usage.requests == server.stats.requests
    assert result.usage.total_tokens == server.stats.billed_tokens
    assert len(script.judged) == 10
    # Scores are P("correct") from the first token's logprobs, not a 0/1 verdict. The fake
    # gives a token the logprob -(0.005 + crc32(token) % 2000 / 1000), rounded to 4 places.
    p_correct = math.exp(-round(0.005 + (zlib.crc32(b"correct") % 2000) / 1000.0, 4))
    assert 0.0 < p_correct < 1.0
    assert result.tree is not None
    scores = sorted(b["step_score"] for b in result.tree[0]["beams"])
    assert scores == pytest.approx([0.0, 0.0, p_correct, p_correct])


async def test_the_run_budget_counts_the_judges_calls() -> None:
    script = Script()
    async with FakeProvider("groq", reply=script.reply, api_key=KEY) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY)
        strategy = BeamPRM(
            model,
            StepJudge(model),
            n=4,
            width=2,
            params=PARAMS,
            remove_duplicates=False,
            budget=Budget(requests=10),
        )
        async with model:
            result = await strategy.run(Q)

    # Round one: 4 generations + 4 judge calls = 8; round two could send only 2 of its 4.
    assert result.stopped_by == "budget"
    assert len(script.judged) == 4 and len(script.step_prompts) == 6
    assert server.stats.requests == result.usage.requests == 10
    # The best partial result: the two beams kept after round one, scored by the judge.
    assert [c.steps for c in result.candidates] == [
        [b["step"]]
        for b in result.tree[0]["beams"]
        if b["status"] == "kept"  # type: ignore[index]
    ]
    assert all(c.score == 1.0 and "ok" in c.text for c in result.candidates)

    # A budget that runs out while judging stops the search there too.
    script = Script()
    async with FakeProvider("groq", reply=script.reply, api_key=KEY) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY)
        strategy = BeamPRM(model, StepJudge(model), n=4, width=2, params=PARAMS)
        async with model:
            result = await strategy.run(Q, budget=Budget(requests=6))
    assert result.stopped_by == "budget"
    assert len(script.judged) == 2 and server.stats.requests == result.usage.requests == 6
    # The two verdicts paid for before the budget ran out are kept (issue 11, bug 9): the
    # steps they judged are the result, with the judge's scores, not dropped unscored.
    judged = sorted(c.text.strip() for c in result.candidates)
    assert judged == sorted(script.judged) and len(judged) == 2
    for c in result.candidates:
        assert c.score == (0.0 if "wrong" in c.text else 1.0)
        assert c.scores == {"step_judge": c.score}


async def test_continue_final_message_path_on_a_vllm_server() -> None:
    prompts: list[str] = []

    def reply(prompt: str, index: int, rng: random.Random) -> str:
        if "Step to check:" in prompt:
            return "correct"
        prompts.append(prompt)
        depth = prompt.count("\n\n")
        return "The answer is 7." if depth >= 2 else f"step {depth}.{index}\n\nmore"

    async with FakeProvider("vllm", reply=reply) as server:
        model = VLLMServer("m", base_url=server.base_url, extra_body={"top_k": 5})
        strategy = BeamPRM(model, StepJudge(model), n=2, width=2, params=PARAMS)
        generator = strategy.generator
        assert generator.path == "continue_final_message"
        # The body the adapter builds: the partial solution as the final assistant message,
        # vLLM told to extend it rather than open a new turn; the model's own fields kept.
        request = GenerateRequest(prompt=generator.prompt(Q, ["step 0.0\n\n"]), params=PARAMS, n=2)
        body = generator._sender.build_payload(request)  # type: ignore[attr-defined]
        assert body["messages"] == [
            {"role": "user", "content": Q},
            {"role": "assistant", "content": "step 0.0\n\n"},
        ]
        assert body["continue_final_message"] is True
        assert body["add_generation_prompt"] is False
        assert body["top_k"] == 5 and body["n"] == 2
        # The model itself (and so the judge on it) still sends ordinary chat requests.
        assert model.extra_body == {"top_k": 5}
        assert "continue_final_message" not in model.build_payload(request)
        async with model:
            result = await strategy.run(Q)

    assert result.answer == "7" and result.stopped_by is None
    # The server saw the question (the first step: an ordinary turn), then the question and
    # the steps so far, as they are.
    assert prompts[0] == Q
    assert any(p.startswith(Q + "\nstep 0.") and p.endswith("\n\n") for p in prompts)
    # The shared runtime: the view's requests count in the model's usage.
    assert model.usage.requests == server.stats.requests == result.usage.requests


async def test_chat_step_protocol_trims_echoes_and_reads_done() -> None:
    replies = {
        0: "  Step A\n\nStep B",  # the earlier steps repeated, then the new one
        1: "Step B",
        2: DONE_REPLY,
        3: "Step A",  # only an echo (the stop string cut the rest): kept, not emptied
    }
    model = FunctionModel(
        lambda r, i: Completion(text=replies[i], finish_reason="stop"),
        capabilities=Capabilities(completions=False),
    )
    generator = StepGenerator(model, StepFormat())
    assert generator.path == step_path(model) == "chat_protocol"
    steps = await generator.next_steps(Q, ["Step A\n\n"], 4, PARAMS)
    assert [(s.text, s.end) for s in steps] == [
        ("Step B\n\n", "delimiter"),
        ("Step B\n\n", "delimiter"),
        ("", "empty"),
        ("Step A\n\n", "delimiter"),
    ]
    prompt = generator.prompt(Q, ["Step A\n\n"])
    assert isinstance(prompt, tuple) and len(prompt) == 1 and prompt[0].role == "user"
    assert Q in prompt[0].content and "Step A" in prompt[0].content
    assert "next step" in prompt[0].content and "blank line" in prompt[0].content
    last = generator.prompt(Q, [], to_end=True)
    assert isinstance(last, tuple) and "to its final answer" in last[0].content
    # Paths by capability: completion endpoints continue raw text.
    assert step_path(FunctionModel(lambda r, i: "x")) == "completion"
    chat = OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert step_path(chat) == "chat_protocol"
    assert (
        step_path(OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", endpoint="completions"))
        == "completion"
    )
    with pytest.raises(ConfigError, match="neither"):
        StepGenerator(
            FunctionModel(
                lambda r, i: "x", capabilities=Capabilities(completions=False, chat=False)
            )
        )


def test_judge_reads_logprobs_and_verdicts() -> None:
    judge = StepJudge(FunctionModel(lambda r, i: "x"))  # logprobs by default
    lp = math.log(0.7)

    def with_top(*top: tuple[str, float]) -> Completion:
        first = TokenLogprob(token=top[0][0], logprob=top[0][1], top=top)
        return Completion(text=top[0][0], logprobs=(first,))

    assert judge.read(with_top(("correct", lp), ("in", math.log(0.2)))) == pytest.approx(0.7)
    assert judge.read(with_top((" Correct", lp), ("correct", math.log(0.1)))) == pytest.approx(0.8)
    assert judge.read(with_top(("in", math.log(0.9)), ("correct", math.log(0.05)))) == (
        pytest.approx(0.05)
    )
    # No verdict among the top tokens: the text is read instead.
    assert judge.read(with_top(("The", lp))) == 0.5
    assert judge.read(Completion(text="**Incorrect**: 3 + 4 is 7")) == 0.0
    assert judge.read(Completion(text="Verdict: correct")) == 1.0
    assert judge.read(Completion(text="+")) == 1.0
    assert judge.read(Completion(text="I cannot tell")) == 0.5
    assert judge.read(Completion(text="The step is correct: 3 + 4 = 7.")) == 1.0
    assert judge.read(Completion(text="The step is not correct.")) == 0.5  # both kinds
    renorm = StepJudge(FunctionModel(lambda r, i: "x"), renormalize=True)
    assert renorm.read(with_top(("correct", lp), ("in", math.log(0.1)))) == pytest.approx(0.875)
    with pytest.raises(ConfigError, match="placeholder"):
        StepJudge(FunctionModel(lambda r, i: "x"), template="no fields")
    with pytest.raises(ConfigError, match="logprobs"):
        StepJudge(
            FunctionModel(lambda r, i: "x", capabilities=Capabilities(logprobs=False)),
            use_logprobs=True,
        )


async def test_judge_sends_each_step_once() -> None:
    seen: list[str] = []

    def reply(request: GenerateRequest, index: int) -> str:
        assert isinstance(request.prompt, str)
        seen.append(request.prompt.split("Step to check:\n", 1)[1].split("\n", 1)[0])
        return "correct"

    judge = StepJudge(FunctionModel(reply, capabilities=Capabilities(logprobs=False)))
    rows = await judge.score_steps(Q, [["a\n\n", "b\n\n"], ["a\n\n", "c\n\n"]])
    assert rows == [[1.0, 1.0], [1.0, 1.0]]
    assert sorted(seen) == ["a", "b", "c"]  # the shared first step judged once
    await judge.score_steps(Q, [["a\n\n", "b\n\n", "d"]])
    assert sorted(seen) == ["a", "b", "c", "d"]


def _judging_model(verdict: str) -> tuple[FunctionModel, list[str]]:
    """A completions model: distinct steps "Step k odd|even" (the answer at depth 2); the judge
    says ``verdict`` for odd steps and "correct" for even ones."""
    judged: list[str] = []
    counter = itertools.count()

    def reply(request: GenerateRequest, i: int) -> str:
        text = prompt_text(request)
        if "Step to check:" in text:
            step = text.split("Step to check:\n", 1)[1].split("\n\nIs the step", 1)[0]
            judged.append(step)
            return verdict if "odd" in step else "correct"
        if text.count("Step ") >= 2:
            return "The answer is 7."
        k = next(counter)
        return f"Step {k} {'odd' if k % 2 else 'even'}\n\n"

    return FunctionModel(reply), judged


async def test_unreadable_verdicts_are_counted_on_the_result_and_warned_once_per_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, judged = _judging_model("hmm, hard to say")
    judge = StepJudge(model, use_logprobs=False)
    strategy = BeamPRM(model, judge, n=4, width=2, params=PARAMS)
    with caplog.at_level(logging.WARNING, logger="ttc"):
        result = await strategy.run(Q)
    guesses = sum(1 for step in judged if "odd" in step)
    assert guesses >= 2 and result.unreadable_verdicts == guesses
    warned = [r for r in caplog.records if "could not read a verdict" in r.getMessage()]
    assert len(warned) == 1 and warned[0].name.startswith("ttc")
    assert judge.unreadable == guesses
    # The next run counts (and warns) afresh; readable verdicts count nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ttc"):
        again = await strategy.run("What is 3 + 5?")
    assert again.unreadable_verdicts > 0
    assert sum("could not read" in r.getMessage() for r in caplog.records) == 1
    clear, _ = _judging_model("incorrect")
    plain = await BeamPRM(clear, StepJudge(clear), n=4, width=2, params=PARAMS).run(Q)
    assert plain.unreadable_verdicts == 0


@pytest.mark.parametrize("strategy", ["lookahead", "dvts"])
async def test_judge_verdicts_paid_before_the_budget_ran_out_are_kept(strategy: str) -> None:
    model, judged = _judging_model("incorrect")
    judge = StepJudge(model, use_logprobs=False, cache_size=0)
    search = (
        Lookahead(model, judge, n=4, width=2, k=0, params=PARAMS)
        if strategy == "lookahead"
        else DVTS(model, judge, n=4, width=2, params=PARAMS)
    )
    # FunctionModel answers n in one request: round one is 1 (lookahead) or 2 (DVTS)
    # requests of steps, then one request a judged step; the budget stops after two verdicts.
    steps_requests = 1 if strategy == "lookahead" else 2
    result = await search.run(Q, budget=Budget(requests=steps_requests + 2))
    assert result.stopped_by == "budget" and len(judged) == 2
    scored = [c for c in result.candidates if c.score is not None]
    assert len(scored) == 2  # the two paid verdicts; before the fix: every score None
    for c in scored:
        assert c.score == (0.0 if "odd" in c.text else 1.0)
