"""A vLLM OpenAI-compatible server you run yourself: native ``n``, logprobs, prompt logprobs,
continuing the final assistant message. Free by default (no price table entry needed)."""

from __future__ import annotations

from typing import ClassVar

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.runtime.model import Capabilities
from ttc.runtime.pricing import Price


class VLLMServer(OpenAICompatible):
    """A vLLM server (default ``http://127.0.0.1:8000/v1``; key from ``VLLM_API_KEY`` if set).

    Native ``n`` up to 256 a request, logprobs, chat and text completions; free by default.
    """

    provider: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str | None] = "http://127.0.0.1:8000/v1"
    default_api_key_env: ClassVar[str | None] = "VLLM_API_KEY"
    base_url_env: ClassVar[str | None] = "VLLM_BASE_URL"
    default_price: ClassVar[Price | None] = Price.free()

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        return Capabilities(
            native_n=True,
            max_n=256,
            logprobs=True,
            continue_final_message=True,
            prompt_logprobs=True,
        )
