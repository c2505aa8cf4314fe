"""A process reward model served by vLLM, scored through the server's ``/pooling`` endpoint.

vLLM serves Qwen2.5-Math-PRM-style token-classification PRMs (``Qwen2ForProcessRewardModel``)
as pooling models::

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling

Each partial solution goes out as the PRM's chat (``qwen_prm_messages``: system prompt,
question, the steps each followed by ``<extra_0>``); the server renders it with the model's chat
template and answers with one row of label probabilities per token (``task:
"token_classify"``), or one row per step when it was started with ``--pooler-config
'{"step_tag_id": <id of <extra_0>>}'``. Where rows come per token, the separator positions are
read from the server's own ``/tokenize`` of the same chat, so no tokenizer is needed here. A
step's score is the probability of the positive label (index 1) at its separator.

vLLM pools this architecture at token 151651 (``<extra_0>`` in Qwen's tokenizer) unless
``step_tag_id`` is set, so a PRM with another tokenizer needs ``--pooler-config
'{"step_tag_id": <its separator's id>}'`` (or ``'{"tok_pooling_type": "ALL"}'``); without it
the server returns no rows and this client says which flag to add.

``VLLMStepwisePRM`` queries a PRM that ``ttc train-prm`` trained (TRL's ``PRMTrainer``: a
``LlamaForTokenClassification``-style checkpoint), which vLLM serves as it is (``--runner
pooling``; vLLM converts the causal LM to a token classifier itself). Its input is not a chat:
it is written as TRL wrote it when training, as token ids.

Requests run under the ``VLLMServer`` model's runtime (``VLLMServer.pool``): its concurrency
limit, retries, budgets (a request and its prompt tokens), usage and trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from ttc.adapters.vllm_server import VLLMServer
from ttc.errors import ConfigError, MalformedResponseError
from ttc.scoring.prm import ProcessRewardModel
from ttc.scoring.prm_hf import QWEN_SYSTEM, qwen_prm_messages
from ttc.validation import check_int

__all__ = ["VLLMPoolingPRM", "VLLMStepwisePRM"]

_PIECES = 50_000  # token ids of questions and steps VLLMStepwisePRM remembers


class VLLMPoolingPRM(ProcessRewardModel):
    """A Qwen2.5-Math-PRM-style PRM on a vLLM server, through ``/pooling``.

    Args:
        server: the ``VLLMServer`` whose ``base_url`` is the PRM server's API root
            (``http://host:8000/v1``) and whose ``model`` is the served name; ``/pooling`` and
            ``/tokenize`` are read beside ``/v1``.
        separator: the step separator token (``"<extra_0>"``).
        system: the system prompt of the PRM's chat.
        label: the index of the "step is correct" label in each row (1).
        name: the key of this PRM's score in ``Candidate.scores``.
        cache_size: step scores remembered (0: no cache).
    """

    name = "vllm_prm"

    def __init__(
        self,
        server: VLLMServer,
        *,
        separator: str = "<extra_0>",
        system: str = QWEN_SYSTEM,
        label: int = 1,
        name: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not isinstance(server, VLLMServer):
            raise ConfigError(
                "server: pass the PRM server as ttc.adapters.VLLMServer(model, base_url=...), "
                f"got {type(server).__name__}"
            )
        if not separator:
            raise ConfigError("separator must not be empty")
        check_int("label", label, ge=0)
        self.server = server
        self.root = server.server_root
        self.separator = separator
        self.system = system
        self.label = label
        if name is not None:
            self.name = name
        self._separator_id: int | None = None

    def __repr__(self) -> str:
        return f"VLLMPoolingPRM({self.server.model!r}, root={self.root!r})"

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """The chat the PRM scores for one partial solution."""
        return qwen_prm_messages(question, steps, separator=self.separator, system=self.system)

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in solutions]
        failures: list[Exception] = []

        async def one(i: int, steps: Sequence[str]) -> None:
            try:
                out[i] = await self._score_one(question, steps)
            except Exception as exc:  # raised as itself below, not in an exception group
                failures.append(exc)

        async with anyio.create_task_group() as tg:  # all at once: the server batches them
            for i, steps in enumerate(solutions):
                tg.start_soon(one, i, steps)
        if failures:
            raise failures[0]
        return out

    async def _score_one(self, question: str, steps: Sequence[str]) -> list[float]:
        messages = self.messages(question, steps)
        rows = await self.server.pool(messages, task="token_classify", use_activation=True)
        if len(rows) != len(steps):  # a row per token: keep the separators' rows
            ids = await self.server.tokenize(messages=messages, add_generation_prompt=False)
            separator = await self._separator()
            if len(rows) != len(ids):
                # vLLM pools Qwen2ForProcessRewardModel at token 151651 (Qwen's <extra_0>)
                # unless told otherwise: another tokenizer's separator is never found
                raise ConfigError(
                    f"separator: /pooling returned {len(rows)} rows for {len(steps)} steps "
                    f"({len(ids)} tokens), so the server does not pool at {self.separator!r} "
                    f"(token {separator}); start it with --pooler-config "
                    f"'{{\"step_tag_id\": {separator}}}'"
                )
            rows = [row for row, token in zip(rows, ids) if token == separator]
        if len(rows) != len(steps):
            raise ValueError(
                f"VLLMPoolingPRM: found {len(rows)} separator positions for {len(steps)} "
                "steps; the tokenizer merged or split a separator"
            )
        return [self._positive(row) for row in rows]

    def _positive(self, row: Any) -> float:
        """The positive label's probability in one row of label probabilities."""
        if isinstance(row, list) and len(row) > self.label:
            return float(row[self.label])
        raise self._malformed(
            f"a /pooling row has {len(row) if isinstance(row, list) else 'no'} labels; label "
            f"{self.label} was asked for (is this a 2-label token-classification PRM?)"
        )

    async def _separator(self) -> int:
        """The separator's token id, from the server's tokenizer (once)."""
        if self._separator_id is None:
            ids = await self.server.tokenize(prompt=self.separator, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(
                    f"separator: {self.separator!r} is not one token of the served model's "
                    f"tokenizer (it tokenizes to {ids})"
                )
            self._separator_id = ids[0]
        return self._separator_id

    def _malformed(self, message: str) -> MalformedResponseError:
        return MalformedResponseError(
            message, provider=self.server.provider, model=self.server.model
        )


class VLLMStepwisePRM(VLLMPoolingPRM):
    """A PRM trained on TRL's stepwise supervision (``ttc train-prm``), served by vLLM::

        python -m vllm.entrypoints.openai.api_server --model PRM_DIR --runner pooling

    The input is written as TRL's ``PRMTrainer`` wrote it when training (and as
    ``StepwisePRM`` writes it in-process): the BOS token, the question, then every step
    followed by ``step_separator``, each piece tokenized on its own, by the server's tokenizer
    (``/tokenize``, each distinct piece once). The ids go to ``/pooling`` as they are, and a
    step scores the positive label's probability at its separator's last token. The server
    must pool every token (vLLM's default for a token classifier): a ``step_tag_id`` would pool
    at separators inside the question too.

    Args:
        server: the ``VLLMServer`` serving the checkpoint (``base_url`` its ``/v1`` root).
        step_separator: what followed every step in training (``ttc train-prm``'s
            ``--step-separator``, saved in the checkpoint's ``ttc_prm.json``; ``"\\n"``).
        label: the index of the "step is correct" label in each row (1).
        name: the key of this PRM's score in ``Candidate.scores``.
        cache_size: step scores remembered (0: no cache).
    """

    name = "vllm_stepwise_prm"

    def __init__(
        self,
        server: VLLMServer,
        *,
        step_separator: str = "\n",
        label: int = 1,
        name: str | None = None,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(
            server, separator=step_separator, system="", label=label, name=name,
            cache_size=cache_size,
        )  # fmt: skip
        self._pieces: dict[str, list[int]] = {}
        self._bos: list[int] | None = None

    def __repr__(self) -> str:
        return f"VLLMStepwisePRM({self.server.model!r}, root={self.root!r})"

    async def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The token ids of one partial solution and the position of each step's score."""
        if self._bos is None:  # what the tokenizer puts first: its BOS, or nothing
            self._bos = await self.server.tokenize(prompt="", add_special_tokens=True)
        separator = await self._piece(self.separator)
        if not separator:
            raise ConfigError(f"step_separator: {self.separator!r} encodes to no tokens")
        ids = [*self._bos, *await self._piece(question.strip())]
        positions = []
        for step in steps:
            ids += [*await self._piece(step.strip()), *separator]
            positions.append(len(ids) - 1)
        return ids, positions

    async def _piece(self, text: str) -> list[int]:
        found = self._pieces.get(text)
        if found is None:
            found = await self.server.tokenize(prompt=text, add_special_tokens=False)
            if len(self._pieces) >= _PIECES:  # questions and steps of a long run: start over
                self._pieces.clear()
            self._pieces[text] = found
        return found

    async def _score_one(self, question: str, steps: Sequence[str]) -> list[float]:
        ids, positions = await self.encode(question, steps)
        rows = await self.server.pool(tokens=ids, task="token_classify", use_activation=True)
        if len(rows) != len(ids):
            raise ConfigError(
                f"server: /pooling returned {len(rows)} rows for {len(ids)} tokens; start the "
                "PRM server pooling every token (no step_tag_id in --pooler-config)"
            )
        return [self._positive(rows[p]) for p in positions]
