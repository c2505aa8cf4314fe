"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server`` or ``llama-server``).

The Python server silently ignores ``n`` (one choice back) and serializes requests, so the
runtime fans out and checks how many choices came back. The C++ server (``llama-server
--parallel N``) honours ``n``, but its usage then counts the completion tokens of one choice
only: with ``capabilities=Capabilities(native_n=True, max_n=N)`` the runtime counts every
choice itself (exact with ``logprobs``, else bounded by each choice's UTF-8 bytes, at most
``max_tokens``), so budgets count what was generated. Free by default."""

from __future__ import annotations

from typing import ClassVar

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.runtime.model import Capabilities
from ttc.runtime.pricing import Price


class LlamaCppServer(OpenAICompatible):
    """A llama.cpp server (default ``http://127.0.0.1:8080/v1``; key from ``LLAMA_API_KEY``
    if set).

    No native ``n``: the Python server ignores it, so the runtime fans out. Free by default.
    """

    usage_counts_one_choice: ClassVar[bool] = True

    provider: ClassVar[str] = "llamacpp"
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:8080/v1"
    default_api_key_env: ClassVar[str | None] = "LLAMA_API_KEY"
    base_url_env: ClassVar[str | None] = "LLAMACPP_BASE_URL"
    default_price: ClassVar[Price | None] = Price.free()

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        return Capabilities(native_n=False, max_n=1, logprobs=True)
