"""Bad settings and bad prompts fail at once, with one typed ttc error naming what is wrong.

Issue 11, bugs 5, 6 and 13 (first half): ``timeout=inf`` was accepted and overflowed at the
first request, ``max_concurrency=nan`` hung it, NaN rates were taken silently, pydantic's bare
``ValidationError`` escaped ``except ttc.TTCError``, and a lone surrogate from a dataset line
raised ``UnicodeEncodeError`` deep inside a request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import ttc
from ttc import (
    DVTS,
    BeamPRM,
    BestOfN,
    Budget,
    Capabilities,
    ConfigError,
    Lookahead,
    Message,
    Price,
    PromptError,
    RepeatedSample,
    RetryPolicy,
    SamplingParams,
    SelfConsistency,
    TTCError,
)
from ttc.adapters import FunctionModel, OpenAICompatible
from ttc.runtime.cache import MemoryCache
from ttc.scoring import ArithmeticPRM, StepJudge, UnitTests
from ttc.types import GenerateRequest

NAN = math.nan
INF = math.inf


def model(**runtime: Any) -> FunctionModel:
    return FunctionModel(lambda request, i: "The answer is 4.", **runtime)


def http(**runtime: Any) -> OpenAICompatible:
    return OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", **runtime)


def prm() -> ArithmeticPRM:
    return ArithmeticPRM()


# (what is built, the setting its error must name)
BAD: list[tuple[str, Callable[[], object], str]] = [
    # models: the runtime settings every adapter shares
    ("timeout inf", lambda: model(timeout=INF), "timeout"),
    ("timeout nan", lambda: model(timeout=NAN), "timeout"),
    ("timeout 0", lambda: model(timeout=0), "timeout"),
    ("timeout -1", lambda: model(timeout=-1), "timeout"),
    ("timeout str", lambda: model(timeout="30"), "timeout"),
    ("timeout bool", lambda: model(timeout=True), "timeout"),
    ("max_concurrency nan", lambda: model(max_concurrency=NAN), "max_concurrency"),
    ("max_concurrency 0", lambda: model(max_concurrency=0), "max_concurrency"),
    ("max_concurrency 2.5", lambda: model(max_concurrency=2.5), "max_concurrency"),
    ("max_concurrency bool", lambda: model(max_concurrency=True), "max_concurrency"),
    ("max_concurrency inf", lambda: model(max_concurrency=INF), "max_concurrency"),
    ("rpm nan", lambda: model(rpm=NAN), "rpm"),
    ("rpm inf", lambda: model(rpm=INF), "rpm"),
    ("rpm 0", lambda: model(rpm=0), "rpm"),
    ("rpm -5", lambda: model(rpm=-5), "rpm"),
    ("rpm str", lambda: model(rpm="60"), "rpm"),
    ("tpm nan", lambda: model(tpm=NAN), "tpm"),
    ("tpm inf", lambda: model(tpm=INF), "tpm"),
    ("tpm 0", lambda: model(tpm=0), "tpm"),
    ("tpm bool", lambda: model(tpm=False), "tpm"),
    ("budget dict", lambda: model(budget={"usd": 1}), "budget"),
    ("retry int", lambda: model(retry=3), "retry"),
    ("price float", lambda: model(price=0.001), "price"),
    ("params dict", lambda: model(params={"temperature": 0}), "params"),
    ("capabilities dict", lambda: model(capabilities={"native_n": False}), "capabilities"),
    ("model name empty", lambda: FunctionModel(lambda r, i: "x", model=""), "model"),
    ("http timeout inf", lambda: http(timeout=INF), "timeout"),
    ("http max_concurrency nan", lambda: http(max_concurrency=NAN), "max_concurrency"),
    # retries
    ("max_attempts 0", lambda: RetryPolicy(max_attempts=0), "max_attempts"),
    ("max_attempts bool", lambda: RetryPolicy(max_attempts=True), "max_attempts"),
    ("max_attempts 2.0", lambda: RetryPolicy(max_attempts=2.0), "max_attempts"),
    ("initial_backoff nan", lambda: RetryPolicy(initial_backoff=NAN), "initial_backoff"),
    ("max_backoff inf", lambda: RetryPolicy(max_backoff=INF), "max_backoff"),
    ("max_retry_after -1", lambda: RetryPolicy(max_retry_after=-1), "max_retry_after"),
    # sampling
    ("max_tokens 0", lambda: SamplingParams(max_tokens=0), "max_tokens"),
    ("max_tokens str", lambda: SamplingParams(max_tokens="512"), "max_tokens"),
    ("max_tokens bool", lambda: SamplingParams(max_tokens=True), "max_tokens"),
    ("max_tokens 1.5", lambda: SamplingParams(max_tokens=1.5), "max_tokens"),
    ("temperature nan", lambda: SamplingParams(temperature=NAN), "temperature"),
    ("temperature -0.1", lambda: SamplingParams(temperature=-0.1), "temperature"),
    ("temperature 3", lambda: SamplingParams(temperature=3), "temperature"),
    ("temperature bool", lambda: SamplingParams(temperature=True), "temperature"),
    ("top_p 0", lambda: SamplingParams(top_p=0), "top_p"),
    ("top_p nan", lambda: SamplingParams(top_p=NAN), "top_p"),
    ("top_logprobs 21", lambda: SamplingParams(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("seed 1.5", lambda: SamplingParams(seed=1.5), "seed"),
    ("seed bool", lambda: SamplingParams(seed=True), "seed"),
    ("stop empty", lambda: SamplingParams(stop=[""]), "stop"),
    ("request n 0", lambda: GenerateRequest(prompt="q", n=0), "n"),
    # budgets
    ("usd -1", lambda: Budget(usd=-1), "usd"),
    ("usd nan", lambda: Budget(usd=NAN), "usd"),
    ("usd inf", lambda: Budget(usd=INF), "usd"),
    ("tokens -1", lambda: Budget(tokens=-1), "tokens"),
    ("tokens 1.5", lambda: Budget(tokens=1.5), "tokens"),
    ("tokens bool", lambda: Budget(tokens=True), "tokens"),
    ("requests str", lambda: Budget(requests="10"), "requests"),
    ("seconds 0", lambda: Budget(seconds=0), "seconds"),
    ("seconds nan", lambda: Budget(seconds=NAN), "seconds"),
    ("budget unknown field", lambda: Budget(dollars=1), "dollars"),
    # prices and capabilities
    ("price nan", lambda: Price(input_per_token=NAN, output_per_token=0), "input_per_token"),
    ("price -1", lambda: Price(input_per_token=0, output_per_token=-1), "output_per_token"),
    ("per_million inf", lambda: Price.per_million(INF, 1), "input_per_token"),
    ("max_n 0", lambda: Capabilities(max_n=0), "max_n"),
    ("max_temperature nan", lambda: Capabilities(max_temperature=NAN), "max_temperature"),
    # strategies
    ("BestOfN n 0", lambda: BestOfN(model(), n=0), "n"),
    ("BestOfN n nan", lambda: BestOfN(model(), n=NAN), "n"),  # type: ignore[arg-type]
    ("SelfConsistency n bool", lambda: SelfConsistency(model(), n=True), "n"),
    ("RepeatedSample n 2.0", lambda: RepeatedSample(model(), n=2.0), "n"),  # type: ignore[arg-type]
    ("RepeatedSample n inf", lambda: RepeatedSample(model(), n=INF), "n"),  # type: ignore[arg-type]
    ("strategy budget dict", lambda: BestOfN(model(), n=2, budget={"usd": 1}), "budget"),
    ("BeamPRM width 0", lambda: BeamPRM(model(), prm(), n=4, width=0), "width"),
    ("BeamPRM width nan", lambda: BeamPRM(model(), prm(), n=4, width=NAN), "width"),
    ("BeamPRM max_rounds 0", lambda: BeamPRM(model(), prm(), max_rounds=0), "max_rounds"),
    ("DVTS n 0", lambda: DVTS(model(), prm(), n=0), "n"),
    ("DVTS max_rounds bool", lambda: DVTS(model(), prm(), max_rounds=True), "max_rounds"),
    ("Lookahead k -1", lambda: Lookahead(model(), prm(), k=-1), "k"),
    ("Lookahead k 1.5", lambda: Lookahead(model(), prm(), k=1.5), "k"),  # type: ignore[arg-type]
    # scorers and verifiers
    ("ArithmeticPRM right nan", lambda: ArithmeticPRM(right=NAN), "right"),
    ("ArithmeticPRM neutral inf", lambda: ArithmeticPRM(neutral=INF), "neutral"),
    ("PRM cache_size -1", lambda: ArithmeticPRM(cache_size=-1), "cache_size"),
    ("PRM cache_size nan", lambda: ArithmeticPRM(cache_size=NAN), "cache_size"),
    ("StepJudge top_logprobs 0", lambda: StepJudge(model(), top_logprobs=0), "top_logprobs"),
    ("StepJudge cache_size 1.5", lambda: StepJudge(model(), cache_size=1.5), "cache_size"),
    ("UnitTests timeout nan", lambda: UnitTests("pass", timeout=NAN), "timeout"),
    ("UnitTests timeout inf", lambda: UnitTests("pass", timeout=INF), "timeout"),
    ("UnitTests memory_mb nan", lambda: UnitTests("pass", memory_mb=NAN), "memory_mb"),
    ("UnitTests memory_mb 8", lambda: UnitTests("pass", memory_mb=8), "memory_mb"),
    ("UnitTests max_processes 0", lambda: UnitTests("pass", max_processes=0), "max_processes"),
    ("UnitTests max_output_bytes", lambda: UnitTests("pass", max_output_bytes=-1), "max_output"),
    ("UnitTests concurrency bool", lambda: UnitTests("pass", concurrency=True), "concurrency"),
    ("MemoryCache max_entries 0", lambda: MemoryCache(max_entries=0), "max_entries"),
    ("MemoryCache max_entries nan", lambda: MemoryCache(max_entries=NAN), "max_entries"),
]


@pytest.mark.parametrize(("build", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_setting_raises_config_error_naming_it_at_construction(
    build: Callable[[], object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert isinstance(caught.value, TTCError) and isinstance(caught.value, ValueError)
    assert field in str(caught.value)


def test_the_sweep_is_broad() -> None:
    assert len(BAD) >= 68


def test_math_answer_timeout_is_checked() -> None:
    pytest.importorskip("math_verify")
    from ttc.scoring import MathAnswer

    for bad in (NAN, INF, 0, "5", True):
        with pytest.raises(ConfigError, match="timeout"):
            MathAnswer("4", timeout=bad)


def test_pydantic_errors_read_as_one_config_error() -> None:
    with pytest.raises(ttc.TTCError) as caught:
        SamplingParams(max_tokens=0)
    text = str(caught.value)
    assert text.startswith("SamplingParams: max_tokens:")
    assert "greater than or equal to 1" in text and "got 0" in text
    with pytest.raises(ConfigError, match=r"Budget: usd: .*greater than or equal to 0.*-1"):
        Budget(usd=-1)
    with pytest.raises(ConfigError, match=r"Budget: usd: .*finite"):
        Budget.model_validate({"usd": NAN})


def test_good_settings_still_pass() -> None:
    assert Budget(usd=1, tokens=10, requests=3, seconds=0.5).usd == 1.0
    assert SamplingParams(temperature=0, max_tokens=8, stop="x").stop == ("x",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert model(timeout=5, max_concurrency=2, rpm=30.5, tpm=1000).timeout == 5.0
    assert RetryPolicy(max_attempts=1, initial_backoff=0).max_attempts == 1
    assert Price.per_million(0.15, 0.6).output_per_token == pytest.approx(6e-7)


# ---------------------------------------------------------------------------- prompts

BAD_PROMPTS: list[tuple[str, object, str]] = [
    ("int", 123, "got int"),
    ("None", None, "got NoneType"),
    ("bytes", b"What is 2 + 2?", "got bytes"),
    ("dict", {"role": "user", "content": "hi"}, "in a list"),
    ("empty", "", "empty"),
    ("blank", "  \n", "empty"),
    ("empty list", [], "empty"),
    ("list with an int", [{"role": "user", "content": "hi"}, 5], "prompt[1]"),
    ("list with a str", ["hi"], "prompt[0]"),
    ("bad role", [{"role": "bot", "content": "hi"}], "prompt[0]"),
    ("missing content", [{"role": "user"}], "prompt[0]"),
    ("set", {"hi"}, "got set"),
    ("lone surrogate", json.loads('"What is \\ud800 2 + 2?"'), "position 8"),
    ("surrogate in message", [Message(role="user", content="ok \udfff")], "prompt[0].content"),
]


@pytest.mark.parametrize(
    ("prompt", "says"), [b[1:] for b in BAD_PROMPTS], ids=[b[0] for b in BAD_PROMPTS]
)
def test_a_bad_prompt_raises_one_prompt_error_saying_what_was_expected(
    prompt: object, says: str
) -> None:
    calls: list[object] = []
    counted = FunctionModel(lambda request, i: calls.append(request) or "4")
    with pytest.raises(PromptError) as caught:
        BestOfN(counted, n=2).run_sync(prompt)  # type: ignore[arg-type]
    assert isinstance(caught.value, ConfigError)
    assert says in str(caught.value) and str(caught.value).startswith("prompt")
    assert calls == []  # refused before any request
    with pytest.raises(PromptError):  # the model's own boundary too
        anyio.run(counted.generate, prompt)


def test_a_lone_surrogate_is_reported_where_it_is() -> None:
    with pytest.raises(PromptError) as caught:
        SelfConsistency(model(), n=2).run_sync(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\ud83db"}]
        )
    assert "prompt[1].content" in str(caught.value)
    assert "position 1" in str(caught.value) and "surrogate" in str(caught.value)


def test_good_prompts_still_run() -> None:
    result = BestOfN(model(), n=2).run_sync("What is 2 + 2? ünïcode 🙂")
    assert result.answer == "4"
    result = BestOfN(model(), n=2).run_sync(
        (Message(role="system", content=""), {"role": "user", "content": "2 + 2?"})
    )
    assert result.answer == "4"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("n_ctx", 2048.0),
        ("n_ctx", 8),
        ("n_threads", True),
        ("n_batch", NAN),
        ("prompt_lookup", 0),
        ("top_k", -1),
        ("min_p", NAN),
        ("min_p", 1.5),
        ("repeat_penalty", INF),
    ],
)
def test_engine_settings_are_checked_before_anything_loads(setting: str, value: object) -> None:
    pytest.importorskip("llama_cpp")
    from ttc.adapters import LlamaCpp

    with pytest.raises(ConfigError, match=setting):
        LlamaCpp(**{setting: value})  # type: ignore[arg-type]
