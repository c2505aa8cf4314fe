"""Large native-n responses: completions and candidates built without a second validation,
one answer extraction per distinct text, and the same results as the validated path."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from ttc import BestOfN, SamplingParams
from ttc.adapters import OpenAICompatible
from ttc.runtime.model import Capabilities
from ttc.runtime.retry import RetryPolicy
from ttc.scoring.extract import extract_answer
from ttc.types import Candidate, Completion, Samples, TokenLogprob, _defaults, candidates

pytestmark = pytest.mark.anyio


def test_a_parsed_completion_is_the_validated_one() -> None:
    logprobs = (TokenLogprob(token="4", logprob=-0.1),)
    validated = Completion(
        text="4",
        finish_reason="length",
        completion_tokens=1,
        logprobs=logprobs,
        prompt_logprobs=None,
        model="m",
    )
    parsed = Completion.parsed("4", "length", 1, "m", logprobs)
    assert parsed == validated
    assert parsed.model_dump() == validated.model_dump()
    assert parsed.model_dump_json() == validated.model_dump_json()
    assert parsed.model_fields_set == validated.model_fields_set
    assert repr(parsed) == repr(validated)
    assert hash(parsed) == hash(validated)
    assert pickle.loads(pickle.dumps(parsed)) == validated
    assert Completion.model_validate(parsed.model_dump()) == parsed
    with pytest.raises(ValidationError):  # still frozen
        parsed.text = "5"  # type: ignore[misc]
    # The field set is shared by parsed completions; copies get their own.
    changed = parsed.model_copy(update={"text": "5"})
    assert changed.text == "5" and parsed.text == "4"
    assert copy.copy(parsed) == parsed
    other = Completion.parsed("6", "stop", None, "m")
    assert other.model_fields_set == set(Completion.model_fields)


def test_a_candidate_from_a_completion_is_the_validated_one_and_its_own() -> None:
    completion = Completion.parsed("so 4", "stop", 3, "m")
    validated = Candidate(
        text="so 4", answer="4", finish_reason="stop", completion_tokens=3, model="m"
    )
    a = Candidate.from_completion(completion, "4")
    b = Candidate.from_completion(completion, "4")
    assert a == validated
    assert a.model_dump() == validated.model_dump()
    assert a.model_fields_set == validated.model_fields_set
    assert a.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    # Scorers fill candidates in one by one: nothing is shared between two of them.
    a.score = 0.5
    a.scores["judge"] = 0.5
    assert b.score is None and b.scores == {} and "score" not in b.model_fields_set
    assert "score" in a.model_fields_set
    assert Candidate.from_completion(completion).answer is None


def test_candidates_that_share_their_set_fields_each_get_their_own_when_changed() -> None:
    """The candidates of a response share one set of set fields until one changes: a change,
    a pickled copy changed after loading, or a model copy must never show in the others."""
    made = Samples(["a", "b", "c", "d"], ["stop"] * 4, None, "m").candidates(lambda _: "1")
    validated = Candidate(
        text="a", answer="1", finish_reason="stop", completion_tokens=None, model="m"
    )
    assert all(c.model_fields_set == validated.model_fields_set for c in made)
    made[0].verified = True
    assert "verified" in made[0].model_fields_set
    assert all("verified" not in c.model_fields_set for c in made[1:])
    loaded = pickle.loads(pickle.dumps(made[1:]))
    loaded[0].score = 1.0
    assert "score" not in loaded[1].model_fields_set and "score" not in made[2].model_fields_set
    assert loaded[1:] == made[2:]
    changed = made[2].model_copy(update={"score": 0.5})
    copied = copy.deepcopy(made[3])
    copied.steps = ["x"]
    assert "score" in changed.model_fields_set and "steps" in copied.model_fields_set
    assert made[2].model_fields_set == made[3].model_fields_set == validated.model_fields_set
    assert made[3].model_dump(exclude_unset=True) == {
        "text": "d",
        "answer": "1",
        "finish_reason": "stop",
        "completion_tokens": None,
        "model": "m",
    }


def test_a_candidate_answer_that_is_not_a_str_is_still_refused() -> None:
    completion = Completion.parsed("so 4", "stop", None, "m")
    with pytest.raises(ValidationError, match="answer"):
        Candidate.from_completion(completion, 4)  # type: ignore[arg-type]

    class Tagged(Candidate):
        tag: str = "t"

    tagged = Tagged.from_completion(completion, "4")
    assert isinstance(tagged, Tagged) and tagged.tag == "t" and tagged.answer == "4"


def test_trusted_construction_starts_from_every_field_of_the_model() -> None:
    """The trusted paths fill in a copy of the model's defaults, so a field added to
    ``Candidate`` or ``Completion`` can never be left out of them (it used to be a hand-written
    list in ``from_completion``)."""

    class Model(BaseModel):
        required: str
        plain: int = 3
        made: dict[str, int] = Field(default_factory=dict)
        mutable: list[int] = [1]  # pydantic copies it for each instance
        described: str | None = Field(None, description="d")

    template, factories = _defaults(Model)
    assert list(template) == list(Model.model_fields)
    built = dict(template, required="r")
    for name, factory in factories:
        built[name] = factory()
    assert built == Model(required="r").model_dump()
    first, second = factories[1][1](), factories[1][1]()
    assert first == [1] and first is not second  # its own copy each time
    for model in (Candidate, Completion):
        assert list(_defaults(model)[0]) == list(model.model_fields)


def test_candidates_of_completions_are_the_validated_ones_field_for_field() -> None:
    completions = [
        Completion.parsed("so 4", "stop", 3, "m"),
        Completion.parsed("so 5", "length", None, "m"),
        Completion.parsed("so 4", "stop", 3, "m"),
    ]
    calls: list[str] = []

    def extract(text: str) -> str | None:
        calls.append(text)
        return text.removeprefix("so ")

    made = candidates(completions, extract)
    expected = [
        Candidate(
            text=c.text,
            answer=c.text[3:],
            finish_reason=c.finish_reason,
            completion_tokens=c.completion_tokens,
            model=c.model,
        )
        for c in completions
    ]
    assert made == expected
    assert [c.model_dump() for c in made] == [c.model_dump() for c in expected]
    assert [c.model_fields_set for c in made] == [c.model_fields_set for c in expected]
    assert [list(c.__dict__) for c in made] == [list(Candidate.model_fields)] * 3
    assert calls == ["so 4", "so 5"]  # once per distinct text
    assert pickle.loads(pickle.dumps(made)) == expected
    made[0].scores["judge"] = 1.0
    made[0].steps = ["a"]
    assert made[2].scores == {} and made[2].steps is None  # nothing shared between them
    assert "steps" in made[0].model_fields_set and "steps" not in made[2].model_fields_set
    many = Completion.parsed_many(["a", "b"], ["stop", "length"], None, "m")
    assert many == [
        Completion(text="a", finish_reason="stop", model="m"),
        Completion(text="b", finish_reason="length", model="m"),
    ]


def test_an_extractor_that_returns_no_str_is_refused_by_validation() -> None:
    with pytest.raises(ValidationError, match="answer"):
        candidates([Completion.parsed("so 4", "stop", None, "m")], lambda _: 4)  # type: ignore[arg-type, return-value]


def test_samples_in_columns_are_the_validated_completions_and_candidates() -> None:
    """What a native-n response parses into: the completions when asked for (built once), and
    candidates straight from the columns that equal those made from the completions and the
    validated ones, field for field."""
    texts = ["so 4", "so 5", "so 4"]
    samples = Samples(texts, ["stop", "length", "stop"], None, "m")
    assert len(samples) == 3 and samples.texts() == texts
    assert samples.token_counts() == [None, None, None]
    calls: list[str] = []

    def extract(text: str) -> str | None:
        calls.append(text)
        return text.removeprefix("so ")

    made = samples.candidates(extract)
    assert calls == ["so 4", "so 5"]  # once per distinct text
    completions = samples.completions()
    assert samples.completions() is completions  # built once
    assert completions == [
        Completion(text=t, finish_reason=f, model="m")
        for t, f in zip(texts, ["stop", "length", "stop"])
    ]
    expected = [
        Candidate(
            text=c.text,
            answer=c.text[3:],
            finish_reason=c.finish_reason,
            completion_tokens=None,
            model="m",
        )
        for c in completions
    ]
    assert made == expected == candidates(completions, extract)
    assert [c.model_dump() for c in made] == [c.model_dump() for c in expected]
    assert [c.model_fields_set for c in made] == [c.model_fields_set for c in expected]
    assert pickle.loads(pickle.dumps(made)) == expected
    made[0].scores["judge"] = 1.0
    assert made[2].scores == {}
    head = samples.head(2)
    assert head.texts() == texts[:2] and samples.head(5) is samples
    assert Samples(["a"], ["stop"], 7, "m").token_counts() == [7]
    built = Samples.of(completions)
    assert built.completions() is completions and built.candidates(extract) == expected
    assert built.head(1).completions() == completions[:1]
    with pytest.raises(ValueError, match="finish reasons"):
        Samples(["a"], [], None, "m")
    with pytest.raises(ValidationError, match="answer"):
        Samples(["a"], ["stop"], None, "m").candidates(lambda _: 4)  # type: ignore[arg-type, return-value]


class _Server:
    """A loopback chat-completions server answering every request with ``body(request)``."""

    def __init__(self, body: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.body = body

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            return web.json_response(self.body(await request.json()))

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def _texts(n: int) -> list[str]:
    """Samples that repeat each other, as short answers do: 5 distinct texts."""
    return [f"{i % 5} + 1 is {i % 5 + 1}. The answer is {i % 5 + 1}." for i in range(n)]


async def test_a_native_n_response_gives_candidates_in_index_order_one_extraction_a_text() -> None:
    n = 40
    texts = _texts(n)

    def body(request: dict[str, Any]) -> dict[str, Any]:
        assert request["n"] == n
        choices = [
            {"index": i, "message": {"content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
        choices[3], choices[7] = choices[7], choices[3]  # out of order on the wire
        return {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 9 * n}}

    calls: list[str] = []

    def counting(text: str) -> str | None:
        calls.append(text)
        return extract_answer(text)

    async with _Server(body) as url:
        model = OpenAICompatible(
            "m", base_url=url, capabilities=Capabilities(native_n=True, max_n=n)
        )
        result = await BestOfN(model, n=n, extract=counting).run("q")
        await model.aclose()
    assert [c.text for c in result.candidates] == texts
    assert [c.answer for c in result.candidates] == [extract_answer(t) for t in texts]
    assert sorted(calls) == sorted(set(texts))  # each distinct text once
    assert result.votes == {"1": 8.0, "2": 8.0, "3": 8.0, "4": 8.0, "5": 8.0}
    assert result.answer == "1" and result.tied == ["1", "2", "3", "4", "5"]
    expected = [
        Candidate(text=t, answer=extract_answer(t), finish_reason="stop", model="m") for t in texts
    ]
    assert result.candidates == expected
    assert result.usage.completion_tokens == 9 * n


async def test_a_text_repeated_across_fanned_out_responses_is_read_once() -> None:
    """One sample a request: the draw reads each distinct text once over all its responses,
    with the same candidates as reading every sample."""
    from ttc.adapters import FunctionModel

    texts = ["The answer is 4.", "The answer is 5.", "The answer is 4."] * 4
    calls: list[str] = []

    def counting(text: str) -> str | None:
        calls.append(text)
        return extract_answer(text)

    model = FunctionModel(lambda request, i: texts[i], native_n=False)
    result = await BestOfN(model, n=len(texts), extract=counting).run("q")
    assert model.usage.requests == len(texts)
    assert sorted(calls) == ["The answer is 4.", "The answer is 5."]
    assert sorted(c.text for c in result.candidates) == sorted(texts)
    assert all(c.answer == extract_answer(c.text) for c in result.candidates)
    assert result.votes == {"4": 8.0, "5": 4.0} and result.answer == "4"


@pytest.mark.parametrize("reported", [-5, "12", None, 1.5])
async def test_a_usage_count_that_is_not_a_count_is_left_to_the_runtime(reported: object) -> None:
    """A negative count used to escape as a raw pydantic ``ValidationError`` out of
    ``generate``; any figure that is not a count now means "not reported"."""

    def body(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "choices": [{"index": 0, "message": {"content": "four"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": reported},
        }

    async with _Server(body) as url:
        model = OpenAICompatible("m", base_url=url, retry=RetryPolicy(max_attempts=1))
        got = await model.generate("q", SamplingParams(max_tokens=8))
        await model.aclose()
    assert [(c.text, c.completion_tokens) for c in got] == [("four", None)]
    assert model.usage.completion_tokens == 8  # not reported: the bound is charged


async def test_choices_without_indices_keep_their_order() -> None:
    def body(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "choices": [{"message": {"content": t}, "finish_reason": "stop"} for t in "abc"],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3},
        }

    async with _Server(body) as url:
        model = OpenAICompatible("m", base_url=url)
        got = await model.generate("q", SamplingParams(max_tokens=8), n=3)
        await model.aclose()
    assert [c.text for c in got] == ["a", "b", "c"]


async def test_an_adapter_that_reads_choices_its_own_way_is_still_asked() -> None:
    """The one-loop parsing of plain choices must not bypass a subclass's ``_completion``."""

    class Shouting(OpenAICompatible):
        def _completion(
            self, choice: dict[str, Any], request: Any, cut_stops: bool, tokens: int | None = None
        ) -> Completion:
            plain = super()._completion(choice, request, cut_stops, tokens)
            return plain.model_copy(update={"text": plain.text.upper()})

    def body(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "choices": [
                {"index": i, "message": {"content": t}, "finish_reason": "stop"}
                for i, t in enumerate("ab")
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }

    async with _Server(body) as url:
        model = Shouting("m", base_url=url)
        got = await model.generate("q", SamplingParams(max_tokens=8), n=2)
        await model.aclose()
    assert [c.text for c in got] == ["A", "B"]


async def test_a_strategy_makes_no_completion_objects_and_generate_still_returns_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sampling strategies take a native-n response's candidates straight from its parsed
    columns; ``generate`` (and its ``on_completions``) still gets the ``Completion`` objects,
    equal to the validated ones."""
    n = 12
    texts = _texts(n)

    def body(request: dict[str, Any]) -> dict[str, Any]:
        choices = [
            {"index": i, "message": {"content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts[: request.get("n", 1)])
        ]
        return {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 9 * n}}

    built: list[int] = []
    parsed_many = Completion.parsed_many

    def counting(*args: Any) -> list[Completion]:
        got = parsed_many(*args)
        built.append(len(got))
        return got

    monkeypatch.setattr(Completion, "parsed_many", counting)
    async with _Server(body) as url:
        model = OpenAICompatible(
            "m", base_url=url, capabilities=Capabilities(native_n=True, max_n=n)
        )
        result = await BestOfN(model, n=n).run("q")
        assert built == []  # no Completion on the strategy's path
        batches: list[list[Completion]] = []
        got = await model.generate("q", n=n, on_completions=batches.append)
        await model.aclose()
    assert result.candidates == [
        Candidate(text=t, answer=extract_answer(t), finish_reason="stop", model="m") for t in texts
    ]
    assert got == [Completion(text=t, finish_reason="stop", model="m") for t in texts]
    assert batches == [got] and built == [n]
    assert result.usage.completion_tokens == model.usage.completion_tokens / 2 == 9 * n


async def test_a_model_that_draws_its_own_way_still_feeds_the_strategies() -> None:
    """A model that overrides ``generate`` (as ``Fallback`` and ``Router`` do) is drawn from
    through it."""
    from ttc.adapters import FunctionModel

    class Doubled(FunctionModel):
        async def generate(self, prompt: Any, params: Any = None, n: int = 1, **kw: Any) -> Any:
            return await super().generate(prompt, params, 2 * n, **kw)

    model = Doubled(lambda request, i: f"The answer is {i % 2}.")
    result = await BestOfN(model, n=3).run("q")
    assert [c.answer for c in result.candidates] == ["0", "1", "0", "1", "0", "1"]
    assert result.answer == "0" and model.samples == 6
    # A generate patched on the instance (a spy, a mock) is honoured too.
    plain = FunctionModel(lambda request, i: "The answer is 3.")
    calls: list[int] = []
    original = plain.generate

    async def spy(prompt: Any, params: Any = None, n: int = 1, **kw: Any) -> Any:
        calls.append(n)
        return await original(prompt, params, n, **kw)

    plain.generate = spy  # type: ignore[method-assign]
    assert (await BestOfN(plain, n=4).run("q")).answer == "3" and calls == [4]
