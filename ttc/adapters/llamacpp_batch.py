"""Continuous batching for ``LlamaCpp``: one engine thread decodes every live sequence together.

Why: test-time compute is many samples of one prompt, and llama.cpp decodes many sequences in
one ``llama_decode`` call for little more than the price of one. The engine owns its own llama
context (a unified KV cache shared by all sequences) and runs in one thread; requests enqueue
and wait on a future. Each step it:

1. drops the sequences of cancelled requests (their KV cells are freed at once);
2. admits queued requests while sequence slots and KV cells allow: a new sequence copies the
   longest cached prefix of its prompt from a live or a kept sequence (``llama_memory_seq_cp``,
   no data copied: the cells are shared), so n samples of one prompt evaluate it once and a
   step search continues its beams' prefixes instead of re-reading them;
3. decodes one batch: a token from every generating sequence, plus prompt chunks of newly
   admitted ones, up to ``n_batch`` tokens;
4. samples each sequence with its own sampler chain (its own seed), applies stop strings,
   end of generation and ``max_tokens``, and resolves the finished requests' futures.

Finished sequences' caches are kept (``prefix_cache``) while slots and cells allow, least
recently used evicted first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ttc.errors import ContextLengthError, ProviderError
from ttc.types import FinishReason, SamplingParams, TokenLogprob

#: A request's own preparation, run by the engine thread: prompt tokens and stop strings.
Prepare = Callable[[], tuple[list[int], tuple[str, ...]]]

#: Wait this long for more requests when the engine wakes from idle, so that requests sent
#: together (the n samples of one call) start in the same step.
_LINGER_S = 0.002
_LINGER_MAX_S = 0.02


@dataclass
class Sample:
    """One finished sequence, as the adapter reports it."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class EngineRequest:
    """A queued sample: what to generate and where the answer goes."""

    prepare: Prepare
    params: SamplingParams
    seed: int
    future: concurrent.futures.Future[Sample] = field(default_factory=concurrent.futures.Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] | None = None
    stops: tuple[bytes, ...] = ()

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.future.cancelled()


@dataclass
class _Seq:
    """A live sequence: its tokens (prompt, then generated), of which ``n_cached`` are in the
    KV cache and the rest wait to be decoded."""

    seq_id: int
    request: EngineRequest
    tokens: list[int]
    n_prompt: int
    n_cached: int
    shared: int  # prompt tokens copied from another sequence's cache
    reserved: int  # KV cells this sequence may add (its unshared prompt part + max_tokens)
    max_tokens: int
    sampler: Any
    generated: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: bytes = b""

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.n_cached


@dataclass
class _Kept:
    """A finished sequence whose cache is kept for its prefix."""

    seq_id: int
    tokens: list[int]
    cells: int


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchEngine:
    """The llama context, its sequences and the thread that steps them (see the module doc).

    Args:
        llm: the loaded ``llama_cpp.Llama`` (its model, tokenizer and detokenizer are used; its
            own context is not).
        n_ctx: the most tokens one sequence may hold (prompt plus answer).
        kv_size: KV cells shared by all sequences (a shared prompt counts once).
        n_seq_max: sequences decoded together; more requests wait in the queue.
        n_batch: the most tokens one decode call takes.
        n_threads: CPU threads for llama.cpp.
        prefix_cache: keep finished sequences' caches to reuse their prefixes.
        top_k, min_p, repeat_penalty: sampler settings shared by all requests.
        describe: ``(provider, model)`` for error messages.
    """

    def __init__(
        self,
        llm: Any,
        *,
        n_ctx: int,
        kv_size: int,
        n_seq_max: int,
        n_batch: int,
        n_threads: int,
        prefix_cache: bool,
        top_k: int,
        min_p: float,
        repeat_penalty: float,
        describe: tuple[str, str],
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.n_ctx = n_ctx
        self.kv_size = kv_size
        self.n_seq_max = n_seq_max
        self.n_batch = max(n_batch, n_seq_max)
        self.prefix_cache = prefix_cache
        self.top_k = top_k
        self.min_p = min_p
        self.repeat_penalty = repeat_penalty
        self.provider, self.model = describe
        # Live sequences and kept ones each need a sequence id.
        self._n_ids = min(2 * n_seq_max, int(llama_cpp.llama_max_parallel_sequences()))
        # The Llama object's own settings (flash attention, KV types, rope...), so that both
        # paths compute the same logits; then what batching needs.
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = kv_size
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = self._n_ids
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True  # one pool of cells: a copied prefix is shared, not copied
        params.swa_full = True  # sliding-window layers keep every cell: any prefix can be reused
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not ctx:
            raise ProviderError(
                f"llama.cpp could not create a context of {kv_size} KV cells for batching; "
                "lower kv_size or n_seq_max",
                provider=self.provider,
                model=self.model,
            )
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = int(llm.n_vocab())

        self._cond = threading.Condition()
        self._queue: deque[EngineRequest] = deque()
        self._live: list[_Seq] = []
        self._kept: OrderedDict[int, _Kept] = OrderedDict()
        self._free_ids = list(range(self._n_ids - 1, -1, -1))
        self._step_lock = threading.Lock()  # held while a step runs; reset/close take it
        self._closed = False
        self._stepping = False
        #: Decode calls, tokens decoded (prompt and generated) and seconds inside llama_decode.
        self.stats: dict[str, float] = {"steps": 0, "tokens": 0, "decode_s": 0.0}
        self._thread = threading.Thread(target=self._run, name="ttc-llamacpp-batch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    def submit(self, request: EngineRequest) -> None:
        with self._cond:
            if self._closed:
                raise ProviderError("the llama.cpp engine is closed", provider=self.provider)
            self._queue.append(request)
            self._cond.notify()

    @property
    def busy(self) -> bool:
        """Whether sequences are live, requests queued, or a step is running."""
        return bool(self._queue or self._live or self._stepping)

    @property
    def live(self) -> int:
        """Sequences being decoded now."""
        return len(self._live)

    @property
    def kept(self) -> int:
        """Finished sequences whose caches are kept for prefix reuse."""
        return len(self._kept)

    def clear(self) -> None:
        """Forget every kept prefix and empty the KV cache once nothing is live (so that the
        same requests replay the same cell layout, and the same logits)."""
        with self._step_lock:
            for kept in list(self._kept.values()):
                self._drop_kept(kept)
            if not self._live:
                self._lib.llama_memory_clear(self._mem, True)

    def close(self) -> None:
        """Stop the thread, fail what is still queued or live, and free the context (the
        thread does it as it leaves; ``close`` waits for that unless called from it)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _shutdown(self) -> None:
        error = ProviderError("the llama.cpp engine was closed", provider=self.provider)
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
        for request in [*queued, *(s.request for s in self._live)]:
            _fail(request, error)
        for seq in self._live:
            self._lib.llama_sampler_free(seq.sampler)
        self._live.clear()
        self._kept.clear()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._queue and not self._live:
                    self._cond.wait()
                if self._closed:
                    break
                idle = not self._live
            if idle:
                self._linger()
            with self._step_lock:
                self._stepping = True
                try:
                    self._step()
                except Exception as exc:  # a failed decode: fail what is live, start clean
                    self._fail_all(exc)
                finally:
                    self._stepping = False
        with self._step_lock:
            self._shutdown()

    def _linger(self) -> None:
        """From idle: wait until requests stop arriving (a few ms), so a burst starts together."""
        deadline = time.monotonic() + _LINGER_MAX_S
        seen = len(self._queue)
        while time.monotonic() < deadline:
            time.sleep(_LINGER_S)
            now = len(self._queue)
            if now == seen:
                return
            seen = now

    def _fail_all(self, exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, ProviderError)
            else ProviderError(f"llama.cpp failed: {exc}", provider=self.provider, model=self.model)
        )
        for seq in self._live:
            _fail(seq.request, error)
            self._release(seq, keep=False)
        self._live.clear()
        for kept in list(self._kept.values()):
            self._drop_kept(kept)
        self._lib.llama_memory_clear(self._mem, True)

    def _step(self) -> None:
        for seq in [s for s in self._live if s.request.cancelled]:
            self._live.remove(seq)
            self._release(seq, keep=False)
        self._admit()
        if not self._live:
            return
        plan = self._fill_batch()
        self._decode()
        finished: list[_Seq] = []
        for seq, index in plan:
            if index is not None and self._sample(seq, index):
                finished.append(seq)
        for seq in finished:
            self._live.remove(seq)
            self._release(seq, keep=self.prefix_cache)

    # ------------------------------------------------------------------ admission

    def _reserved(self) -> int:
        return sum(s.reserved for s in self._live) + sum(k.cells for k in self._kept.values())

    def _admit(self) -> None:
        waiting: list[EngineRequest] = []
        while self._queue:
            with self._cond:
                if not self._queue:
                    break
                request = self._queue.popleft()
            if request.cancelled:
                continue
            if len(self._live) >= self.n_seq_max:
                waiting.append(request)
                break
            outcome = self._try_admit(request)
            if outcome == "wait":
                waiting.append(request)
            elif outcome == "full":
                waiting.append(request)
                break
        with self._cond:
            self._queue.extendleft(reversed(waiting))

    def _try_admit(self, request: EngineRequest) -> str:
        """``"ok"``, ``"failed"`` (its future holds the error), ``"wait"`` (a live sequence is
        about to cache a longer prefix of it: admit next step and share that) or ``"full"``."""
        if request.tokens is None:
            try:
                tokens, stops = request.prepare()
            except Exception as exc:
                _fail(request, exc)
                return "failed"
            if len(tokens) >= self.n_ctx:
                _fail(
                    request,
                    ContextLengthError(
                        f"the prompt has {len(tokens)} tokens and n_ctx={self.n_ctx}: "
                        "raise n_ctx or shorten the prompt",
                        provider=self.provider,
                        model=self.model,
                    ),
                )
                return "failed"
            request.tokens = tokens
            request.stops = tuple(s.encode("utf-8") for s in stops)
        tokens = request.tokens
        # The longest prefix already in the cache, and the longest a live sequence will have.
        source, shared = None, 0
        planned = 0
        for seq in self._live:
            cached = common_prefix(seq.tokens[: seq.n_cached], tokens)
            if cached > shared:
                source, shared = seq.seq_id, cached
            planned = max(planned, common_prefix(seq.tokens, tokens))
        for kept in self._kept.values():
            cached = common_prefix(kept.tokens, tokens)
            if cached > shared:
                source, shared = kept.seq_id, cached
        if planned > shared + 1 and not request.cancelled:
            return "wait"
        # The last prompt token is always decoded again: its logits start the sampling.
        shared = min(shared, len(tokens) - 1)
        max_tokens = min(request.params.max_tokens, self.n_ctx - len(tokens))
        need = len(tokens) - shared + max_tokens
        if need > self.kv_size:
            _fail(
                request,
                ContextLengthError(
                    f"the prompt ({len(tokens)} tokens) and max_tokens need {need} KV cells; "
                    f"kv_size={self.kv_size}: raise kv_size or lower max_tokens",
                    provider=self.provider,
                    model=self.model,
                ),
            )
            return "failed"
        while self._reserved() + need > self.kv_size or not self._free_ids:
            victim = next((k for k in self._kept.values() if k.seq_id != source), None)
            if victim is None:
                if not self._live and source is not None and source in self._kept:
                    # Only the source is kept: give up sharing rather than wait for nothing.
                    self._drop_kept(self._kept[source])
                    source, shared = None, 0
                    need = len(tokens) + max_tokens
                    continue
                return "full"
            self._drop_kept(victim)
        seq_id = self._free_ids.pop()
        if source is not None and shared > 0:
            self._lib.llama_memory_seq_cp(self._mem, source, seq_id, 0, shared)
        else:
            shared = 0
        if source is not None and source in self._kept:
            self._kept.move_to_end(source)  # recently used
        self._live.append(
            _Seq(
                seq_id=seq_id,
                request=request,
                tokens=list(tokens),
                n_prompt=len(tokens),
                n_cached=shared,
                shared=shared,
                reserved=need,
                max_tokens=max_tokens,
                sampler=self._sampler(request.params, request.seed),
            )
        )
        return "ok"

    def _sampler(self, params: SamplingParams, seed: int) -> Any:
        """The sampler chain ``Llama.generate`` builds, with this sequence's own seed."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if self.repeat_penalty != 1.0:
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_penalties(64, self.repeat_penalty, 0.0, 0.0)
            )
        if params.temperature <= 0.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(self.top_k))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(self.min_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    # ------------------------------------------------------------------ one decode

    def _fill_batch(self) -> list[tuple[_Seq, int | None]]:
        """Put every generating sequence's next token in the batch, then prompt chunks of new
        ones while room is left. Which batch row holds each sequence's logits (``None``: still
        reading its prompt)."""
        batch = self._batch
        n = 0
        plan: list[tuple[_Seq, int | None]] = []
        # Generating sequences first (one token each), then prompts, oldest first.
        for seq in sorted(self._live, key=lambda s: s.pending > 1):
            room = self.n_batch - n
            if room <= 0:
                break
            take = min(seq.pending, room)
            for j in range(take):
                pos = seq.n_cached + j
                batch.token[n] = seq.tokens[pos]
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                batch.logits[n] = 0
                n += 1
            seq.n_cached += take
            if seq.pending == 0:
                batch.logits[n - 1] = 1
                plan.append((seq, n - 1))
            else:
                plan.append((seq, None))
        batch.n_tokens = n
        return plan

    def _decode(self) -> None:
        start = time.perf_counter()
        result = int(self._lib.llama_decode(self._ctx, self._batch))
        self.stats["decode_s"] += time.perf_counter() - start
        self.stats["steps"] += 1
        self.stats["tokens"] += self._batch.n_tokens
        if result == 1 and self._kept:
            # No room for the batch (a copied prefix outlived the kept sequence that counted
            # its cells): drop the kept caches and decode the same batch once more (one ubatch:
            # nothing of it was stored).
            for kept in list(self._kept.values()):
                self._drop_kept(kept)
            result = int(self._lib.llama_decode(self._ctx, self._batch))
        if result != 0:
            raise ProviderError(
                f"llama_decode failed with status {result} "
                f"({self._batch.n_tokens} tokens, {len(self._live)} sequences)",
                provider=self.provider,
                model=self.model,
            )

    # ------------------------------------------------------------------ sampling

    def _sample(self, seq: _Seq, index: int) -> bool:
        """Sample ``seq``'s next token from batch row ``index``; whether it finished (then its
        request's future is resolved)."""
        lib = self._lib
        request = seq.request
        if request.cancelled:
            return True
        token = int(lib.llama_sampler_sample(seq.sampler, self._ctx, index))
        finish: FinishReason | None = None
        if lib.llama_vocab_is_eog(self._vocab, token):
            finish = "stop"
        else:
            if request.params.logprobs:
                logits = lib.llama_get_logits_ith(self._ctx, index)
                seq.logprobs.append(
                    token_logprob(
                        self.llm, logits, token, self._n_vocab, request.params.top_logprobs or 0
                    )
                )
            seq.generated.append(token)
            seq.tokens.append(token)
            text = self.llm.detokenize(seq.generated, prev_tokens=seq.tokens[: seq.n_prompt])
            seq.ends.append(len(text))
            cut = min((i for s in request.stops if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                finish = "stop"
            elif len(seq.generated) >= seq.max_tokens:
                finish = "length"
            seq.text = text
        if finish is None:
            return False
        kept: tuple[TokenLogprob, ...] | None = None
        if request.params.logprobs:
            starts = [0, *seq.ends[:-1]]
            kept = tuple(lp for lp, s in zip(seq.logprobs, starts) if s < len(seq.text))
        sample = Sample(
            text=seq.text.decode("utf-8", errors="ignore"),
            finish_reason=finish,
            prompt_tokens=seq.n_prompt,
            completion_tokens=len(seq.generated),
            logprobs=kept,
        )
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            request.future.set_result(sample)
        return True

    # ------------------------------------------------------------------ cells and ids

    def _release(self, seq: _Seq, *, keep: bool) -> None:
        self._lib.llama_sampler_free(seq.sampler)
        if keep and seq.n_cached > 0:
            cells = seq.n_cached - seq.shared
            self._kept[seq.seq_id] = _Kept(seq.seq_id, seq.tokens[: seq.n_cached], cells)
            self._kept.move_to_end(seq.seq_id)
            while len(self._kept) > self.n_seq_max:
                self._drop_kept(next(iter(self._kept.values())))
            return
        self._lib.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        self._free_ids.append(seq.seq_id)

    def _drop_kept(self, kept: _Kept) -> None:
        del self._kept[kept.seq_id]
        self._lib.llama_memory_seq_rm(self._mem, kept.seq_id, -1, -1)
        self._free_ids.append(kept.seq_id)


def _fail(request: EngineRequest, exc: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        request.future.set_exception(exc)


def token_logprob(llm: Any, logits_row: Any, token: int, n_vocab: int, top_n: int) -> TokenLogprob:
    """The log probability of ``token`` under a row of logits (the model's own distribution,
    before temperature and truncation), with the ``top_n`` best alternatives."""
    import math

    import numpy as np

    logits = np.ctypeslib.as_array(
        ctypes.cast(logits_row, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
    )
    peak = float(logits.max())
    log_norm = peak + math.log(float(np.exp(logits - peak).sum()))
    top: tuple[tuple[str, float], ...] = ()
    if top_n:
        best = np.argpartition(logits, -top_n)[-top_n:]
        best = best[np.argsort(-logits[best])]
        top = tuple((_piece(llm, int(i)), float(logits[i]) - log_norm) for i in best)
    return TokenLogprob(token=_piece(llm, token), logprob=float(logits[token]) - log_norm, top=top)


def _piece(llm: Any, token: int) -> str:
    return str(llm.detokenize([token]).decode("utf-8", errors="replace"))
