"""Model names to adapters: one string picks a provider preset, a local engine or LiteLLM.

So that a command line, a config file or a notebook can name a model without importing its
adapter. The names:

==================================  =========================================================
``""``, ``"embedded"``, ``"gemma"``  ``LlamaCpp()``: Gemma 3 270M in-process (no key, no GPU)
``"path/to/model.gguf"``            ``LlamaCpp("path/to/model.gguf")``
``"openai/<model>[@<url>]"``         ``OpenAI("<model>")`` (``OPENAI_API_KEY``)
``"groq/<model>[@<url>]"``           ``Groq("<model>")`` (``GROQ_API_KEY``)
``"cerebras/<model>[@<url>]"``       ``Cerebras("<model>")`` (``CEREBRAS_API_KEY``)
``"vllm-server/<model>[@<url>]"``   ``VLLMServer("<model>", base_url=<url>)``
``"llamacpp-server/<model>[@<url>]"`` ``LlamaCppServer("<model>", base_url=<url>)``
``"openai-compatible/<model>@<url>"`` ``OpenAICompatible("<model>", base_url=<url>)``
``"litellm/<provider>/<model>"``    ``LiteLLM("<provider>/<model>")`` (``@<url>``: ``api_base``)
any other ``"<provider>/<model>"``  ``LiteLLM("<provider>/<model>")`` (``@<url>``: ``api_base``)
==================================  =========================================================

``<url>`` is the server's API root, e.g. ``http://127.0.0.1:8000/v1``; ``base_url=`` says the same
(giving both with different URLs is an error), and without either the preset's
``<PROVIDER>_BASE_URL`` environment variable, then its default, applies: a name never goes
anywhere but where it says. ``api_key=`` is the key for any HTTP adapter. The in-process engines
take neither (``ConfigError``). Other keyword arguments go to the adapter (``budget=``,
``n_threads=``, ...).
Adapters are imported only when named, so resolving a hosted model never loads llama.cpp.
"""

from __future__ import annotations

import re
from typing import Any

from ttc.errors import ConfigError
from ttc.runtime.model import Model

__all__ = ["EMBEDDED_NAMES", "resolve_model"]

#: Names of the embedded default model.
EMBEDDED_NAMES = frozenset({"", "embedded", "gemma"})

_SERVER = re.compile(r"^(?P<model>.+?)(?:@(?P<url>https?://\S+))?$")

_SYNTAX = (
    "'embedded', a path to a .gguf file, 'openai/<model>[@<url>]', 'groq/<model>[@<url>]', "
    "'cerebras/<model>[@<url>]', 'vllm-server/<model>[@<url>]', 'llamacpp-server/<model>[@<url>]', "
    "'openai-compatible/<model>@<url>' or a LiteLLM name '<provider>/<model>'"
)


def resolve_model(name: str, **kwargs: Any) -> Model:
    """The adapter for ``name`` (see the module docstring for the syntax), built with
    ``kwargs``. Raises ``ConfigError`` for a name that fits no form, and for a URL or a key
    given to a model that cannot use it (rather than dropping it)."""
    if not isinstance(name, str):
        raise ConfigError(f"model: a model name must be a string, got {type(name).__name__}")
    name = name.strip()
    local = name.lower() in EMBEDDED_NAMES or name.lower().endswith(".gguf")
    if local:
        for option in ("base_url", "api_key"):
            if kwargs.get(option) is not None:
                raise ConfigError(
                    f"{option}: {name or 'embedded'!r} runs in this process and takes no "
                    f"{option.replace('_', ' ')}; name a server (e.g. 'openai-compatible/"
                    "<model>@<url>') to use one"
                )
            kwargs.pop(option, None)
    if name.lower() in EMBEDDED_NAMES:
        from ttc.adapters.llamacpp import LlamaCpp

        return LlamaCpp(**kwargs)
    if name.lower().endswith(".gguf"):
        from ttc.adapters.llamacpp import LlamaCpp

        return LlamaCpp(name, **kwargs)
    prefix, slash, rest = name.partition("/")
    if not slash or not prefix or not rest:
        raise ConfigError(f"model: cannot resolve {name!r}; expected {_SYNTAX}")
    prefix = prefix.lower()
    if kwargs.get("api_key") is None:
        kwargs.pop("api_key", None)  # the adapter's own default (its environment variable)
    if prefix in ("openai", "groq", "cerebras"):
        model, url = _model_and_url(name, rest, required=False)
        _set_url(kwargs, url, name)
        if prefix == "openai":
            from ttc.adapters.openai import OpenAI

            return OpenAI(model, **kwargs)
        if prefix == "groq":
            from ttc.adapters.groq import Groq

            return Groq(model, **kwargs)
        from ttc.adapters.cerebras import Cerebras

        return Cerebras(model, **kwargs)
    if prefix in ("vllm-server", "llamacpp-server", "openai-compatible"):
        model, url = _model_and_url(
            name, rest, required=prefix == "openai-compatible" and not kwargs.get("base_url")
        )
        _set_url(kwargs, url, name)
        if prefix == "vllm-server":
            from ttc.adapters.vllm_server import VLLMServer

            return VLLMServer(model, **kwargs)
        if prefix == "llamacpp-server":
            from ttc.adapters.llamacpp_server import LlamaCppServer

            return LlamaCppServer(model, **kwargs)
        from ttc.adapters.openai_compatible import OpenAICompatible

        return OpenAICompatible(model, **kwargs)
    from ttc.adapters.litellm import LiteLLM

    model, url = _model_and_url(name, rest if prefix == "litellm" else name, required=False)
    _set_url(kwargs, url, name)
    base_url = kwargs.pop("base_url", None)
    if base_url is not None:
        if kwargs.get("api_base") not in (None, base_url):
            raise ConfigError(f"api_base: {name!r} got two different URLs (base_url and api_base)")
        kwargs["api_base"] = base_url
    return LiteLLM(model, **kwargs)


def _set_url(kwargs: dict[str, Any], url: str | None, name: str) -> None:
    """Put the name's ``@<url>`` into ``kwargs["base_url"]``; two different URLs (the name's
    and an explicit ``base_url``, e.g. ``--base-url``) are an error, not a silent choice."""
    given = kwargs.get("base_url")
    if given is None:
        kwargs.pop("base_url", None)
    if url is None:
        return
    if given is not None and given.rstrip("/") != url.rstrip("/"):
        raise ConfigError(
            f"base_url: {name!r} names {url} but base_url (--base-url) is {given}; give one"
        )
    kwargs["base_url"] = url


def _model_and_url(name: str, rest: str, *, required: bool) -> tuple[str, str | None]:
    match = _SERVER.match(rest)
    if match is None or not match.group("model"):
        raise ConfigError(f"model: cannot resolve {name!r}; expected {_SYNTAX}")
    url = match.group("url")
    if url is None and "@http" in rest.lower():
        raise ConfigError(f"model: cannot read the URL in {name!r}; expected {_SYNTAX}")
    if required and url is None:
        raise ConfigError(
            f"model: {name!r} needs the server's API root: '<prefix>/<model>@http://host:port/v1'"
            " or --base-url"
        )
    return match.group("model"), url
