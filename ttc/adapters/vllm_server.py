"""A vLLM OpenAI-compatible server you run yourself: native ``n``, logprobs, prompt logprobs,
continuing the final assistant message. Free by default (no price table entry needed).

Beside generation, the server's own endpoints: ``pool`` (``/pooling``: a reward model's or
classifier's rows, metered as the model's requests are) and ``tokenize`` (``/tokenize``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp

from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.errors import ConfigError, MalformedResponseError, ProviderError
from ttc.runtime.model import Capabilities
from ttc.runtime.pricing import Price
from ttc.runtime.ratelimit import parse_rate_limit_headers


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

    @property
    def server_root(self) -> str:
        """The server's root (``base_url`` without ``/v1``), where vLLM serves ``/pooling``
        and ``/tokenize``."""
        root = self.base_url
        return root[: -len("/v1")] if root.endswith("/v1") else root

    async def pool(
        self,
        messages: list[dict[str, str]] | None = None,
        *,
        tokens: Sequence[int] | None = None,
        prompt_bound: int | None = None,
        **fields: Any,
    ) -> list[Any]:
        """The rows ``/pooling`` returns for one chat, or for one prompt given as token ids
        (``tokens``, sent as they are: no special tokens added), one row per pooled position
        (every token, or the positions the server was told to pool at), e.g. a PRM's label
        probabilities with ``task="token_classify"``. ``fields`` go into the request body.

        Metered as this model's own requests are (``Model.metered``): retries, concurrency and
        rate limits, budgets (one request and its prompt tokens; ``prompt_bound``, by default
        the chat's UTF-8 bytes plus room for the template, or the number of ``tokens``, is
        reserved first), usage, and a ``(pooling)`` trace event."""
        body: dict[str, Any] = {"model": self.model}
        if messages is not None and tokens is None:
            body.update(messages=messages, add_generation_prompt=False)
            bound = sum(len(m["content"].encode()) + 8 for m in messages) + 32
        elif tokens is not None and messages is None:
            body.update(input=[int(t) for t in tokens], add_special_tokens=False)
            bound = len(body["input"])
        else:
            raise ConfigError("pool: pass messages or tokens=, exactly one of them")
        body.update(fields)
        if prompt_bound is None:
            prompt_bound = bound

        async def send() -> tuple[list[Any], int | None]:
            data = await self.post("/pooling", body)
            try:
                rows = data["data"][0]["data"]
                used = (data.get("usage") or {}).get("prompt_tokens")
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise self._malformed(f"the /pooling answer lacks data ({exc!r})") from exc
            if not isinstance(rows, list):
                raise self._malformed("the /pooling answer's data is not a list of rows")
            return rows, used if isinstance(used, int) else None

        return await self.metered(send, prompt_bound=prompt_bound, kind="pooling")

    async def tokenize(
        self,
        *,
        prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
        **fields: Any,
    ) -> list[int]:
        """The token ids of ``prompt`` or of ``messages`` (rendered with the model's chat
        template) by the server's tokenizer (``/tokenize``; not metered: nothing is run).
        ``fields`` go into the request body (``add_special_tokens``,
        ``add_generation_prompt``)."""
        if (prompt is None) == (messages is None):
            raise ConfigError("tokenize: pass prompt= or messages=, exactly one of them")
        body: dict[str, Any] = {"model": self.model}
        if prompt is not None:
            body["prompt"] = prompt
        else:
            body["messages"] = messages
        body.update(fields)
        data = await self.post("/tokenize", body)
        ids = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            raise self._malformed("the /tokenize answer has no token list")
        return [int(t) for t in ids]

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON to ``path`` under ``server_root`` on this model's session, and
        the parsed JSON answer; failures raise the typed errors generation raises. Not
        metered: wrap it in ``Model.metered`` where the server does work that costs."""
        url = f"{self.server_root}{path}"
        failure: ProviderError | None = None
        try:
            async with self._session().post(url, data=json.dumps(body).encode()) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failure = self._transport_error(exc, url)
        if failure is not None:  # raised outside the ``except``: no foreign __context__
            raise failure
        if status != 200:
            error = self._error(status, raw.decode("utf-8", "replace"), headers, url)
            error.rate_limits = parse_rate_limit_headers(headers)
            raise error
        try:
            return json.loads(raw)
        except ValueError:
            failure = self._malformed(f"{path} answered with {len(raw)} bytes that are not JSON")
        raise failure

    def _malformed(self, message: str) -> MalformedResponseError:
        return MalformedResponseError(message, provider=self.provider, model=self.model)
