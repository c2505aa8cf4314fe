"""Model names to adapters, and the import cost of the new entry points."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ttc.adapters import (
    Cerebras,
    Groq,
    LiteLLM,
    LlamaCppServer,
    OpenAI,
    OpenAICompatible,
    VLLMServer,
    resolve_model,
)
from ttc.errors import ConfigError


def test_provider_prefixes_pick_presets() -> None:
    groq = resolve_model("groq/llama-3.1-8b-instant", api_key="k")
    assert isinstance(groq, Groq) and groq.model == "llama-3.1-8b-instant"
    assert isinstance(resolve_model("openai/gpt-4o-mini", api_key="k"), OpenAI)
    assert isinstance(resolve_model("cerebras/llama3.1-8b", api_key="k"), Cerebras)


def test_local_servers_take_an_optional_url() -> None:
    vllm = resolve_model("vllm-server/gemma@http://10.0.0.2:8000/v1")
    assert isinstance(vllm, VLLMServer)
    assert vllm.model == "gemma" and vllm.base_url == "http://10.0.0.2:8000/v1"
    default = resolve_model("vllm-server/org/model-7b")
    assert default.model == "org/model-7b"
    assert isinstance(default, VLLMServer) and default.base_url == "http://127.0.0.1:8000/v1"
    llama = resolve_model("llamacpp-server/gemma@http://127.0.0.1:9999/v1")
    assert isinstance(llama, LlamaCppServer) and llama.base_url.endswith(":9999/v1")
    generic = resolve_model("openai-compatible/m@https://example.test/v1")
    assert type(generic) is OpenAICompatible and generic.base_url == "https://example.test/v1"
    with pytest.raises(ConfigError, match="API root"):
        resolve_model("openai-compatible/m")


def test_other_names_go_to_litellm() -> None:
    model = resolve_model("anthropic/claude-3-5-haiku-latest")
    assert isinstance(model, LiteLLM) and model.model == "anthropic/claude-3-5-haiku-latest"
    explicit = resolve_model("litellm/groq/llama-3.1-8b-instant")
    assert isinstance(explicit, LiteLLM) and explicit.model == "groq/llama-3.1-8b-instant"


def test_unresolvable_names_and_wrong_paths() -> None:
    for bad in ("gpt-4o", "/x", "groq/"):
        with pytest.raises(ConfigError, match="cannot resolve"):
            resolve_model(bad)
    pytest.importorskip("llama_cpp")
    with pytest.raises(ConfigError, match=r"model_path.*missing\.gguf"):
        resolve_model("/tmp/definitely/missing.gguf")


def test_embedded_names() -> None:
    pytest.importorskip("llama_cpp")
    from ttc.adapters import LlamaCpp

    for name in ("", "embedded", "gemma", "Embedded"):
        model = resolve_model(name, n_threads=1)
        assert isinstance(model, LlamaCpp) and model.model_path is None
        assert not model.loaded  # resolving a name loads nothing


def test_adapters_and_cli_import_no_engine() -> None:
    code = (
        "import json, sys\n"
        "from ttc.adapters import LlamaCpp, resolve_model\n"
        "import ttc.cli\n"
        "heavy = ['llama_cpp', 'litellm', 'torch', 'vllm', 'numpy']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_urls_keys_and_base_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A preset with @<url> goes there (it used to keep the hosted API, model "m@<url>").
    groq = resolve_model("groq/llama-3.1-8b-instant@http://127.0.0.1:9/v1", api_key="k")
    assert isinstance(groq, Groq) and groq.model == "llama-3.1-8b-instant"
    assert groq.base_url == "http://127.0.0.1:9/v1"
    # <PROVIDER>_BASE_URL relocates a preset; an explicit URL wins over it.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.test/v1")
    assert resolve_model("openai/m", api_key="k").base_url == "http://proxy.test/v1"
    assert resolve_model("openai/m@http://a.test/v1", api_key="k").base_url == "http://a.test/v1"
    assert resolve_model("openai/m", api_key="k", base_url="http://b.test/v1").base_url == (
        "http://b.test/v1"
    )
    monkeypatch.setenv("VLLM_BASE_URL", "http://gpu-box:8000/v1")
    assert resolve_model("vllm-server/m").base_url == "http://gpu-box:8000/v1"
    # A key for the generic adapter, a URL given either way.
    generic = resolve_model("openai-compatible/m", base_url="http://c.test/v1", api_key="k2")
    assert generic.base_url == "http://c.test/v1"
    assert isinstance(generic, OpenAICompatible) and generic.api_key is not None
    assert generic.api_key.get_secret_value() == "k2"
    with pytest.raises(ConfigError, match="base_url"):
        resolve_model("groq/m@http://a.test/v1", api_key="k", base_url="http://b.test/v1")
    for local in ("embedded", "model.gguf"):
        with pytest.raises(ConfigError, match="runs in this process"):
            resolve_model(local, api_key="k")
    # LiteLLM: the URL is its api_base.
    lite = resolve_model("anthropic/claude-3-5-haiku-latest@http://gw.test/v1", api_key="k")
    assert isinstance(lite, LiteLLM) and lite.model == "anthropic/claude-3-5-haiku-latest"
    assert lite.api_base == "http://gw.test/v1"
    assert resolve_model("litellm/groq/m", base_url="http://gw.test/v1").api_base == (  # type: ignore[attr-defined]
        "http://gw.test/v1"
    )
