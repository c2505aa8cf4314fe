"""Groq: OpenAI-compatible, but ``n`` must be 1 (the runtime fans out) and ``logprobs``,
``top_logprobs`` and ``logit_bias`` are rejected (refused here before anything is sent).
Rate-limit headers (``x-ratelimit-*``, durations like ``7.66s``) come on every response and
pace the requests."""

from __future__ import annotations

from typing import ClassVar

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.runtime.model import Capabilities


class Groq(OpenAICompatible):
    """Groq (``https://api.groq.com/openai/v1``); the key comes from ``GROQ_API_KEY``.

    No native ``n`` (the runtime fans out, one request a sample), no logprobs (refused before
    sending), chat only, at most 4 stop strings on the wire. Its ``x-ratelimit-*`` headers pace
    the requests.
    """

    provider: ClassVar[str] = "groq"
    default_base_url: ClassVar[str | None] = "https://api.groq.com/openai/v1"
    default_api_key_env: ClassVar[str | None] = "GROQ_API_KEY"
    base_url_env: ClassVar[str | None] = "GROQ_BASE_URL"
    requires_api_key: ClassVar[bool] = True

    @classmethod
    def default_capabilities(cls) -> Capabilities:
        return Capabilities(native_n=False, max_n=1, logprobs=False, max_stop=4, completions=False)
