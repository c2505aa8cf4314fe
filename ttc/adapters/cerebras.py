"""Cerebras: OpenAI-compatible with no documented ``n`` (the runtime fans out), at most 4 stop
strings (the rest are applied client-side), temperature 0 to 1.5, and ``max_completion_tokens``.
Cerebras pre-charges its token rate limit from ``max_completion_tokens``: keep it small for
step-wise calls."""

from __future__ import annotations

from typing import ClassVar

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.runtime.model import Capabilities


class Cerebras(OpenAICompatible):
    """Cerebras (``https://api.cerebras.ai/v1``); the key comes from ``CEREBRAS_API_KEY``.

    No native ``n`` (the runtime fans out), temperature 0 to 1.5, at most 4 stop strings on the
    wire (the rest applied client-side); ``max_tokens`` is sent as ``max_completion_tokens``,
    which Cerebras charges to its token rate limit in advance.
    """

    provider: ClassVar[str] = "cerebras"
    default_base_url: ClassVar[str | None] = "https://api.cerebras.ai/v1"
    default_api_key_env: ClassVar[str | None] = "CEREBRAS_API_KEY"
    base_url_env: ClassVar[str | None] = "CEREBRAS_BASE_URL"
    requires_api_key: ClassVar[bool] = True
    max_tokens_field: ClassVar[str] = "max_completion_tokens"

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        return Capabilities(native_n=False, max_n=1, logprobs=True, max_stop=4, max_temperature=1.5)
