"""The deployment configuration file (ttc.config): what it builds; errors name line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttc.config import load_config, locate, parse_config
from ttc.errors import ConfigError
from ttc.runtime.pricing import Price
from ttc.strategies import BestOfN
from ttc.testing import FakeProvider

GOOD = """\
# a deployment
[models.fast]
model = "openai-compatible/fake-model@{url}"
api_key_env = "TTC_TEST_FAKE_KEY"
rpm = 600
max_concurrency = 8
timeout = 30
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
budget = {{ tokens = 100000 }}
retry = {{ max_attempts = 2 }}
params = {{ temperature = 0.5, max_tokens = 64 }}

[profiles.math]
strategy = "best-of-n"
model = "fast"
n = 4
scorer = "prm"
budget = {{ tokens = 5000 }}
max_tokens = 32

[server]
port = 0
keys_db = "keys.sqlite"
default_limits = {{ tokens = 1000, period = "day" }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ttc.toml"
    path.write_text(text)
    return path


def test_a_file_builds_models_with_their_settings_and_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTC_TEST_FAKE_KEY", "sk-secret")
    config = load_config(write(tmp_path, GOOD.format(url="http://127.0.0.1:9/v1")))
    model = config.build_model("fast")
    assert model.name.endswith("/fake-model")
    assert model.price == Price.per_million(1.0, 2.0)
    assert model.budget is not None and model.budget.tokens == 100000
    assert model.retry.max_attempts == 2
    assert model.max_concurrency == 8
    assert model.params.temperature == 0.5 and model.params.max_tokens == 64
    assert model.api_key is not None  # type: ignore[attr-defined]
    assert config.server.default_limits is not None
    assert config.server.default_limits.tokens == 1000


def test_a_profile_builds_its_strategy_from_the_registry_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    monkeypatch.setenv("TTC_TEST_FAKE_KEY", "sk-secret")

    async def go() -> None:
        async with FakeProvider("openai", api_key="sk-secret") as fake:
            config = load_config(write(tmp_path, GOOD.format(url=fake.base_url)))
            strategy = config.build_strategy("math")
            assert isinstance(strategy, BestOfN)
            assert config.spec("math").n == 4
            assert strategy.budget is not None and strategy.budget.tokens == 5000
            result = await strategy.run("What is 6 * 7?")
            assert result.answer == "42"
            assert len(result.candidates) == 4
            assert result.usage.cost_usd > 0  # priced by the file

    anyio.run(go)


def test_a_missing_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTC_TEST_FAKE_KEY", raising=False)
    config = load_config(write(tmp_path, GOOD.format(url="http://127.0.0.1:9/v1")))
    with pytest.raises(ConfigError, match="TTC_TEST_FAKE_KEY is not set"):
        config.build_model("fast")


@pytest.mark.parametrize(
    ("change", "line", "key"),
    [
        (("rpm = 600", "rpm = -1"), 5, "models.fast.rpm"),
        (("timeout = 30", "timout = 30"), 7, "models.fast.timout"),
        (("tokens = 100000", "tokenz = 100000"), 9, "models.fast.budget.tokenz"),
        (("max_attempts = 2", "max_attempts = 0"), 10, "models.fast.retry.max_attempts"),
        (("temperature = 0.5", "temperature = 5"), 11, "models.fast.params.temperature"),
        (('strategy = "best-of-n"', 'strategy = "best-of-x"'), 14, "profiles.math.strategy"),
        (('scorer = "prm"', 'scorer = "oracle"'), 17, "profiles.math.scorer"),
        (('scorer = "prm"', "width = 2"), 17, "profiles.math.width"),
        (('model = "fast"', 'model = "slow"'), 15, "profiles.math.model"),
        (("port = 0", "port = 70000"), 22, "server.port"),
        (('period = "day"', 'period = "week"'), 24, "server.default_limits.period"),
        (("[server]", "[servers]"), 21, "servers"),
    ],
)
def test_errors_name_the_line_and_the_key(
    tmp_path: Path, change: tuple[str, str], line: int, key: str
) -> None:
    text = GOOD.format(url="http://127.0.0.1:9/v1").replace(*change)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: "), str(info.value)


def test_an_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    text = GOOD.format(url="http://x/v1").replace("rpm = 600", "rpmm = 600")
    with pytest.raises(ConfigError, match="unknown key; the keys are model, base_url"):
        load_config(write(tmp_path, text))


def test_a_key_written_into_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = GOOD.format(url="http://x/v1").replace(
        'api_key_env = "TTC_TEST_FAKE_KEY"', 'api_key = "sk-live-123"'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert ":4: models.fast.api_key: keys do not go in the file" in str(info.value)
    assert "sk-live-123" not in str(info.value)


def test_invalid_toml_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[models\n", "x.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_unknown_model_and_profile_names_list_the_configured_ones() -> None:
    config = parse_config('[models.a]\nmodel = "groq/x"\n')
    with pytest.raises(ConfigError, match="unknown model 'b'; the configured models are a"):
        config.build_model("b")
    with pytest.raises(ConfigError, match="unknown profile 'p'; the profiles are none"):
        config.spec("p")


def test_an_empty_file_is_the_defaults() -> None:
    config = parse_config("")
    assert config.models == {} and config.profiles == {}
    assert config.server.port == 8000 and config.server.auth


def test_locate_finds_dotted_keys_and_table_headers() -> None:
    text = '[a]\nx = 1\n[a.b]\n"y.z" = 2\nc.d = 3\n'
    assert locate(text, ("a", "x")) == 2
    assert locate(text, ("a", "b", "y.z")) == 4
    assert locate(text, ("a", "b", "c", "d")) == 5
    assert locate(text, ("a", "b", "nothing")) == 3
    assert locate(text, ("q",)) is None


def test_ttc_run_takes_a_profile_or_a_model_from_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import json
    import threading

    from typer.testing import CliRunner

    from ttc.cli import app

    monkeypatch.setenv("TTC_TEST_FAKE_KEY", "sk-secret")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeProvider("openai", api_key="sk-secret")
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
    try:
        path = write(tmp_path, GOOD.format(url=fake.base_url))
        runner = CliRunner()
        ran = runner.invoke(
            app, ["run", "What is 6 * 7?", "--settings", str(path), "--profile", "math", "--json"]
        )
        assert ran.exit_code == 0, ran.output
        data = json.loads(ran.stdout)
        assert data["strategy"] == "best-of-n" and data["n"] == 4
        assert data["model"].endswith("/fake-model")
        assert data["usage"]["cost_usd"] > 0  # the file's price
        ran = runner.invoke(
            app,
            ["run", "What is 6 * 7?", "--settings", str(path), "-m", "fast", "-n", "2", "--json"],
        )
        assert ran.exit_code == 0, ran.output
        assert json.loads(ran.stdout)["strategy"] == "self-consistency"
        bad = runner.invoke(app, ["run", "x", "--profile", "math"])
        assert bad.exit_code == 2 and "--profile needs --settings" in bad.output
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
