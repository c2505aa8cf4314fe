"""Fallback chains and routers as entries of the settings file (ttc.config): built from other
entries by ``TTCConfig.build_model``, run over loopback fake providers with injected outages
(the run completes on the secondary, each entry's budget from the file holds), used by
``ttc run --settings`` and ``ttc serve``; bad entries are errors naming the line and key."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import pytest

from ttc import BestOfN
from ttc.config import TTCConfig, load_config, parse_config
from ttc.errors import ConfigError
from ttc.runtime.fallback import Fallback, Router
from ttc.runtime.model import Model
from ttc.testing import FakeProvider, Faults

SETTINGS = """\
[models.primary]
model = "openai-compatible/primary-model@{primary}"
retry = {{ max_attempts = 1 }}
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
{primary_extra}

[models.secondary]
model = "openai-compatible/secondary-model@{secondary}"
price = {{ input_per_million = 3.0, output_per_million = 4.0 }}

[models.reliable]
fallback = ["primary", "secondary"]
on = ["server_error", "rate_limit", "budget"]
cooldown = 0
params = {{ max_tokens = 24 }}

[models.wide]
router = ["primary", "secondary"]
weights = [3, 1]

[profiles.math]
strategy = "best-of-n"
model = "reliable"
n = 6
"""


def settings(primary: str, secondary: str, primary_extra: str = "") -> str:
    return SETTINGS.format(primary=primary, secondary=secondary, primary_extra=primary_extra)


@asynccontextmanager
async def fakes(*faults: Faults | None) -> AsyncIterator[list[FakeProvider]]:
    async with AsyncExitStack() as stack:
        out = []
        for i, f in enumerate(faults):
            out.append(await stack.enter_async_context(FakeProvider("openai", faults=f, seed=i)))
        yield out


def billed_once(model: Model, fake: FakeProvider) -> None:
    assert model.usage.requests == fake.stats.requests
    assert model.usage.prompt_tokens == fake.stats.billed_prompt_tokens
    assert model.usage.completion_tokens == fake.stats.billed_completion_tokens


def test_a_configured_fallback_completes_on_the_secondary_during_an_outage() -> None:
    async def go() -> None:
        async with fakes(Faults(server_error=1.0), None) as (down, up):
            config = parse_config(settings(down.base_url, up.base_url))
            model = config.build_model("reliable")
            assert isinstance(model, Fallback)
            assert model.on == {"server_error", "rate_limit", "budget"}
            assert model.cooldown == 0 and model.params.max_tokens == 24
            primary, secondary = model.models
            result = await BestOfN(model, n=6).run("What is 12 * 13?")
            await model.aclose()
        assert len(result.candidates) == 6 and result.stopped_by is None
        assert down.stats.requests == 1 and down.stats.ok == 0  # one attempt (the file's retry)
        assert up.stats.choices == 6
        billed_once(primary, down)
        billed_once(secondary, up)
        # Priced by the secondary's entry: what it billed, at its price.
        assert result.usage.cost_usd == pytest.approx(
            (up.stats.billed_prompt_tokens * 3.0 + up.stats.billed_completion_tokens * 4.0) / 1e6
        )

    anyio.run(go)


def test_each_entrys_own_budget_from_the_file_holds_inside_a_fallback() -> None:
    async def go() -> None:
        async with fakes(None, None) as (a, b):
            text = settings(a.base_url, b.base_url, "budget = { requests = 3 }")
            config = parse_config(text)
            model = config.build_model("reliable")
            strategy = BestOfN(model, n=2)
            results = [await strategy.run("What is 9 * 9?") for _ in range(5)]
            await model.aclose()
        assert all(len(r.candidates) == 2 and r.stopped_by is None for r in results)
        # The primary's own budget (across runs): three requests, then the secondary's turn.
        assert a.stats.requests == 3 and b.stats.requests == 2

    anyio.run(go)


def test_an_entry_built_alone_and_inside_a_wrapper_is_one_model_with_one_budget() -> None:
    config = parse_config(
        settings("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "budget = { requests = 3 }")
    )
    built: dict[str, Model] = {}
    primary = config.build_model("primary", built=built)
    fallback = config.build_model("reliable", built=built)
    router = config.build_model("wide", built=built)
    assert isinstance(fallback, Fallback) and isinstance(router, Router)
    assert fallback.models[0] is primary is router.models[0]
    assert fallback.models[1] is router.models[1] is built["secondary"]
    assert config.build_model("reliable", built=built) is fallback
    # Without ``built`` each call builds its own (separate budgets).
    assert config.build_model("reliable").models[0] is not primary


def test_a_configured_router_deals_samples_by_its_weights() -> None:
    async def go() -> None:
        async with fakes(None, None) as (a, b):
            config = parse_config(settings(a.base_url, b.base_url))
            model = config.build_model("wide")
            assert isinstance(model, Router) and model.weights == (3.0, 1.0)
            result = await BestOfN(model, n=8).run("What is 6 * 7?")
            await model.aclose()
        assert len(result.candidates) == 8
        assert (a.stats.choices, b.stats.choices) == (6, 2)

    anyio.run(go)


def test_command_line_endpoint_options_are_refused_on_a_wrapper_entry() -> None:
    config = parse_config(settings("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"))
    with pytest.raises(
        ConfigError, match=r"models\.reliable is a fallback of other entries: base_url"
    ):
        config.resolve("reliable", base_url="http://127.0.0.1:1/v1")


@contextmanager
def fakes_in_a_thread(*faults: Faults | None) -> Iterator[list[FakeProvider]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started = [FakeProvider("openai", faults=f, seed=i) for i, f in enumerate(faults)]
    try:
        for fake in started:
            asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
        yield started
    finally:
        for fake in started:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_ttc_run_settings_runs_a_profile_over_a_configured_fallback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttc.cli import app

    with fakes_in_a_thread(Faults(server_error=1.0), None) as (down, up):
        path = tmp_path / "ttc.toml"
        path.write_text(settings(down.base_url, up.base_url))
        ran = CliRunner().invoke(
            app, ["run", "What is 6 * 7?", "--settings", str(path), "--profile", "math", "--json"]
        )
        assert ran.exit_code == 0, ran.output
        data = json.loads(ran.stdout)
        assert data["model"].startswith("fallback(")
        assert data["n"] == 6 and data["answer"] == "42"
        assert up.stats.choices == 6 and down.stats.ok == 0


def test_ttc_serve_answers_a_configured_fallback_by_name_sharing_its_entries() -> None:
    import openai

    from ttc.server.testing import ServerThread

    with fakes_in_a_thread(Faults(server_error=1.0), None) as (down, up):
        config = parse_config(settings(down.base_url, up.base_url) + "[server]\nauth = false\n")
        with ServerThread(config) as server:
            client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
            reply = client.chat.completions.create(
                model="reliable", messages=[{"role": "user", "content": "What is 6 * 7?"}]
            )
            assert "42" in (reply.choices[0].message.content or "")
            by_model = (reply.model_extra or {})["ttc"]["by_model"]
            assert by_model["openai-compatible/primary-model"]["requests"] == 1  # the outage
            assert by_model["openai-compatible/primary-model"]["completion_tokens"] == 0
            answered = by_model["openai-compatible/secondary-model"]
            assert answered["completion_tokens"] == reply.usage.completion_tokens > 0  # type: ignore[union-attr]
            voted = client.chat.completions.create(
                model="best-of-4/reliable",  # a strategy over the fallback, by name
                messages=[{"role": "user", "content": "What is 6 * 7?"}],
            )
            assert (voted.model_extra or {})["ttc"]["strategy"] == "best-of-n"
            listed = {m.id for m in client.models.list()}
            assert {"primary", "secondary", "reliable", "wide", "math"} <= listed
        assert up.stats.choices == 1 + 4 and down.stats.ok == 0


def test_the_server_builds_each_entry_once() -> None:
    from ttc.server.app import STATE, create_app

    config = parse_config(
        settings("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1") + "[server]\nauth = false\n"
    )
    state = create_app(config)[STATE]
    fallback, router = state.models["reliable"], state.models["wide"]
    assert isinstance(fallback, Fallback) and isinstance(router, Router)
    assert fallback.models[0] is state.models["primary"] is router.models[0]
    assert fallback.models[1] is state.models["secondary"] is router.models[1]
    assert state.owned == set(config.models)


GOOD = settings("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize(
    ("change", "line", "key", "message"),
    [
        (
            ('"primary", "secondary"]\non', '"primary", "tertiary"]\non'),
            12,
            "models.reliable.fallback",
            "unknown model 'tertiary'; the configured models are primary, reliable, secondary, "
            "wide",
        ),
        (
            ('fallback = ["primary", "secondary"]', 'fallback = ["primary", "primary"]'),
            12,
            "models.reliable.fallback",
            "names 'primary' twice",
        ),
        (
            (
                'router = ["primary", "secondary"]\nweights = [3, 1]',
                'router = ["primary", "reliable", "wide"]\nweights = [1, 1, 1]',
            ),
            18,
            "models.wide.router",
            "a cycle: wide -> wide",
        ),
        (
            ("cooldown = 0", 'cooldown = 0\nmodel = "openai/gpt-4o"'),
            12,
            "models.reliable.fallback",
            "an entry is one of model, fallback or router, not both model and fallback",
        ),
        (
            ("weights = [3, 1]", 'weights = [3, 1]\nfallback = ["primary"]'),
            18,
            "models.wide.router",
            "not both fallback and router",
        ),
        (
            ("cooldown = 0", "cooldown = 0\nrpm = 30"),
            15,
            "models.reliable.rpm",
            "rpm is a setting of one provider: set it on the entries the fallback names",
        ),
        (
            ("cooldown = 0", "cooldown = 0\nbudget = { usd = 1.0 }"),
            15,
            "models.reliable.budget",
            "budget is a setting of one provider",
        ),
        (
            ("weights = [3, 1]", "weights = [3, 1]\ncooldown = 5"),
            20,
            "models.wide.cooldown",
            "cooldown is a setting of a fallback entry, not of a router entry",
        ),
        (
            ("cooldown = 0", 'cooldown = 0\nby = "weight"'),
            15,
            "models.reliable.by",
            "by is a setting of a router entry, not of a fallback entry",
        ),
        (
            ("retry = { max_attempts = 1 }", 'on = ["rate_limit"]'),
            3,
            "models.primary.on",
            "on is a setting of a fallback or router entry, not of a model entry",
        ),
        (
            ("weights = [3, 1]", "weights = [3, 1, 1]"),
            19,
            "models.wide.weights",
            "3 weights for 2 entries",
        ),
        (("weights = [3, 1]", "weights = [3, 0]"), 19, "models.wide.weights.1", "greater than 0"),
        (
            ('on = ["server_error", "rate_limit", "budget"]', 'on = ["outage"]'),
            13,
            "models.reliable.on",
            "unknown failure kind 'outage'",
        ),
        (
            ('model = "openai-compatible/secondary-model@http://127.0.0.1:9/v1"', "rpm = 5"),
            7,
            "models.secondary",
            "needs one of model, fallback or router",
        ),
        (
            ('fallback = ["primary", "secondary"]', "fallback = []"),
            12,
            "models.reliable.fallback",
            "at least 1 item",
        ),
    ],
)
def test_bad_wrapper_entries_name_the_line_and_the_key(
    tmp_path: Path, change: tuple[str, str], line: int, key: str, message: str
) -> None:
    assert change[0] in GOOD
    path = tmp_path / "ttc.toml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: "), str(info.value)
    assert message in str(info.value)


def test_a_longer_cycle_is_shown_in_full() -> None:
    text = GOOD + '\n[models.a]\nfallback = ["b"]\n\n[models.b]\nrouter = ["secondary", "a"]\n'
    with pytest.raises(ConfigError, match=r":27: models\.a\.fallback: a cycle: a -> b -> a"):
        parse_config(text)


def test_the_configs_of_the_docs_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example at the top of ttc.config: its fallback and router entries check and build."""
    import ttc.config

    doc = ttc.config.__doc__ or ""
    example = doc.split("::\n", 1)[1].split("\n\n``load_config", 1)[0]
    text = "\n".join(line[4:] for line in example.splitlines())
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    monkeypatch.setenv("CEREBRAS_API_KEY", "csk-test")
    config: TTCConfig = parse_config(text)
    built: dict[str, Model] = {}
    assert isinstance(config.build_model("reliable", built=built), Fallback)
    wide = config.build_model("wide", built=built)
    assert isinstance(wide, Router) and wide.models[0] is built["fast"]
