"""Model names to adapters: one string picks a provider preset, a local engine or LiteLLM.

So that a command line, a config file or a notebook can name a model without importing its
adapter. The names:

==================================  =========================================================
``""``, ``"embedded"``, ``"gemma"``  ``LlamaCpp()``: Gemma 3 270M in-process (no key, no GPU)
``"path/to/model.gguf"``            ``LlamaCpp("path/to/model.gguf")``
``"openai/<model>"``                ``OpenAI("<model>")`` (``OPENAI_API_KEY``)
``"groq/<model>"``                  ``Groq("<model>")`` (``GROQ_API_KEY``)
``"cerebras/<model>"``              ``Cerebras("<model>")`` (``CEREBRAS_API_KEY``)
``"vllm-server/<model>[@<url>]"``   ``VLLMServer("<model>", base_url=<url>)``
``"llamacpp-server/<model>[@<url>]"`` ``LlamaCppServer("<model>", base_url=<url>)``
``"openai-compatible/<model>@<url>"`` ``OpenAICompatible("<model>", base_url=<url>)``
``"litellm/<provider>/<model>"``    ``LiteLLM("<provider>/<model>")``
any other ``"<provider>/<model>"``  ``LiteLLM("<provider>/<model>")``
==================================  =========================================================

``<url>`` is the server's API root, e.g. ``http://127.0.0.1:8000/v1``; without it the preset's
default applies. Keyword arguments go to the adapter (``budget=``, ``n_threads=``, ...).
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
    "'embedded', a path to a .gguf file, 'openai/<model>', 'groq/<model>', "
    "'cerebras/<model>', 'vllm-server/<model>[@<url>]', 'llamacpp-server/<model>[@<url>]', "
    "'openai-compatible/<model>@<url>' or a LiteLLM name '<provider>/<model>'"
)


def resolve_model(name: str, **kwargs: Any) -> Model:
    """The adapter for ``name`` (see the module docstring for the syntax), built with
    ``kwargs``. Raises ``ConfigError`` for a name that fits no form."""
    if not isinstance(name, str):
        raise ConfigError(f"model: a model name must be a string, got {type(name).__name__}")
    name = name.strip()
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
    if prefix == "openai":
        from ttc.adapters.openai import OpenAI

        return OpenAI(rest, **kwargs)
    if prefix == "groq":
        from ttc.adapters.groq import Groq

        return Groq(rest, **kwargs)
    if prefix == "cerebras":
        from ttc.adapters.cerebras import Cerebras

        return Cerebras(rest, **kwargs)
    if prefix in ("vllm-server", "llamacpp-server", "openai-compatible"):
        model, url = _model_and_url(name, rest, required=prefix == "openai-compatible")
        if url is not None:
            kwargs.setdefault("base_url", url)
        if prefix == "vllm-server":
            from ttc.adapters.vllm_server import VLLMServer

            return VLLMServer(model, **kwargs)
        if prefix == "llamacpp-server":
            from ttc.adapters.llamacpp_server import LlamaCppServer

            return LlamaCppServer(model, **kwargs)
        from ttc.adapters.openai_compatible import OpenAICompatible

        return OpenAICompatible(model, **kwargs)
    from ttc.adapters.litellm import LiteLLM

    return LiteLLM(rest if prefix == "litellm" else name, **kwargs)


def _model_and_url(name: str, rest: str, *, required: bool) -> tuple[str, str | None]:
    match = _SERVER.match(rest)
    if match is None or not match.group("model"):
        raise ConfigError(f"model: cannot resolve {name!r}; expected {_SYNTAX}")
    url = match.group("url")
    if required and url is None:
        raise ConfigError(
            f"model: {name!r} needs the server's API root: '<prefix>/<model>@http://host:port/v1'"
        )
    return match.group("model"), url
