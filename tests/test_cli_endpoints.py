"""The CLI reaches keyed and relocated endpoints: ``--api-key``, ``--api-key-env``,
``--base-url``, ``<model>@<url>`` on every HTTP preset and the presets' ``<PROVIDER>_BASE_URL``
variables, through the real ``ttc`` command against loopback FakeProvider servers that check
the Authorization header. A name never goes anywhere but where it says."""

from __future__ import annotations

import json
import socket
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from threaded_fake import threaded_fake
from typer.testing import CliRunner

from ttc.cli import app
from ttc.testing import FakeProvider

runner = CliRunner()
KEY = "sk-test-0123456789"


def served(
    flavor: str = "openai", api_key: str | None = KEY, **options: Any
) -> AbstractContextManager[FakeProvider]:
    """A FakeProvider on its own event loop in a thread, so the CLI can run its own loop."""
    return threaded_fake(flavor, api_key=api_key, **options)


def dead_url() -> str:
    """An API root on a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI", "GROQ", "CEREBRAS", "VLLM", "LLAMACPP"):
        monkeypatch.delenv(f"{var}_API_KEY", raising=False)
        monkeypatch.delenv(f"{var}_BASE_URL", raising=False)


def ttc(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def ask(model: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return ttc("run", "What is 2 + 3?", "-n", "2", "--json", "-m", model, *extra, env=env)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_openai_compatible_sends_the_key_given_on_the_command_line() -> None:
    with served() as fake:
        result = ask(f"openai-compatible/m@{fake.base_url}", "--api-key", KEY)
        assert result.exit_code == 0, result.output
        usage = json.loads(result.stdout)["usage"]
        assert usage["requests"] >= 1
        # What each model did, as Result.usage.by_model has it.
        assert list(usage["by_model"]) == ["openai-compatible/m"]
        assert usage["by_model"]["openai-compatible/m"]["requests"] == usage["requests"]
        assert fake.stats.ok >= 1 and fake.stats.faults["unauthorized"] == 0
        assert KEY not in result.output

        without = ask(f"openai-compatible/m@{fake.base_url}")
        assert without.exit_code == 1 and "401" in without.output


def test_the_key_can_come_from_a_named_environment_variable() -> None:
    with served() as fake:
        env = {"MY_PROXY_KEY": KEY}
        model = f"openai-compatible/m@{fake.base_url}"
        result = ask(model, "--api-key-env", "MY_PROXY_KEY", env=env)
        assert result.exit_code == 0, result.output
        assert fake.stats.ok >= 1 and fake.stats.faults["unauthorized"] == 0
        unset = ask(model, "--api-key-env", "NOT_SET_ANYWHERE")
        assert unset.exit_code == 2
        assert "environment variable NOT_SET_ANYWHERE is not set" in flat(unset.output)
        both = ask(model, "--api-key", KEY, "--api-key-env", "MY_PROXY_KEY", env=env)
        assert both.exit_code == 2 and "give the key one way" in flat(both.output)


@pytest.mark.parametrize("preset", ["groq", "openai", "cerebras"])
def test_a_preset_with_a_url_goes_to_that_url(preset: str) -> None:
    # Before: groq/m@<url> kept the hosted API and sent the model "m@<url>" there.
    with served(preset) as fake:
        result = ask(f"{preset}/m@{fake.base_url}", "--api-key", KEY)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["model"] == f"{preset}/m"
        assert fake.stats.ok >= 1


def test_base_url_option_and_provider_variables() -> None:
    with served("groq") as fake:
        # GROQ_BASE_URL relocates the preset, the key from GROQ_API_KEY as usual.
        env = {"GROQ_BASE_URL": fake.base_url, "GROQ_API_KEY": KEY}
        from_env = ask("groq/m", env=env)
        assert from_env.exit_code == 0, from_env.output
        served_before = fake.stats.ok
        assert served_before >= 1

        # --base-url and --api-key win over the environment.
        env = {"GROQ_BASE_URL": dead_url(), "GROQ_API_KEY": "wrong"}
        explicit = ask("groq/m", "--base-url", fake.base_url, "--api-key", KEY, env=env)
        assert explicit.exit_code == 0, explicit.output
        assert fake.stats.ok > served_before
        assert fake.stats.faults["unauthorized"] == 0

    with served("openai") as fake:
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": KEY}
        result = ask("openai/m", env=env)
        assert result.exit_code == 0, result.output
        assert fake.stats.ok >= 1


def test_two_different_urls_or_a_url_for_the_embedded_model_are_clear_errors() -> None:
    with served() as fake:
        clash = ask(f"groq/m@{fake.base_url}", "--base-url", dead_url(), "--api-key", KEY)
        assert clash.exit_code == 2 and "base_url" in clash.output
        assert fake.stats.requests == 0
    embedded = ask("embedded", "--base-url", "http://127.0.0.1:1/v1")
    assert embedded.exit_code == 2
    assert "runs in this process and takes no base url" in flat(embedded.output)
    bad_env = ask("openai/m", "--api-key", KEY, env={"OPENAI_BASE_URL": "api.example.test"})
    assert bad_env.exit_code == 2
    assert "base_url (OPENAI_BASE_URL) must start with http://" in flat(bad_env.output)


def test_eval_reaches_a_keyed_relocated_server(tmp_path: Path) -> None:
    with served("groq") as fake:
        args = ["eval", "gsm8k-sample", "--limit", "2", "-n", "2", "-o", str(tmp_path), "--json"]
        result = ttc(*args, "-m", "groq/m", "--base-url", fake.base_url, "--api-key", KEY)
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["stored"] == 2 and data["failed"] == {}
        assert fake.stats.ok == 4 and fake.stats.faults["unauthorized"] == 0
        assert KEY not in (tmp_path / "results.sqlite").read_bytes().decode("latin-1")


def test_version() -> None:
    from ttc.cli import package_version

    result = ttc("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ttc {package_version()}"
    assert package_version()[0].isdigit()


def test_run_shows_unpriced_spend_as_such() -> None:
    with served(api_key=None) as fake:
        result = ttc(
            "run", "What is 2 + 3?", "-n", "2", "-m", f"openai-compatible/m@{fake.base_url}"
        )
        assert result.exit_code == 0, result.output
        text = flat(result.output)
        assert "cost: unpriced (openai-compatible/m)" in text and "$0.0" not in text
