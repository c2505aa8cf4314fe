"""OpenAI's API: native ``n`` (one request, shared prefill), logprobs, at most 4 stop strings."""

from __future__ import annotations

from typing import ClassVar

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.runtime.model import Capabilities


class OpenAI(OpenAICompatible):
    """OpenAI (``https://api.openai.com/v1``); the key comes from ``OPENAI_API_KEY``.

    Native ``n`` up to 128 a request (one request, shared prefill), logprobs, chat and text
    completions; at most 4 stop strings go on the wire, further ones are applied client-side.
    """

    provider: ClassVar[str] = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    default_api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    base_url_env: ClassVar[str | None] = "OPENAI_BASE_URL"
    requires_api_key: ClassVar[bool] = True

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        return Capabilities(native_n=True, max_n=128, logprobs=True, max_stop=4)
