"""The data that flows through ttc: prompts, sampling parameters, completions, usage, results.

Every type is a pydantic v2 model, so a bad value fails at construction with an error that
names the field: for what users write (messages, sampling parameters, requests) a
``ttc.ConfigError``, and a bad prompt a ``ttc.PromptError`` (``as_request_prompt``). Models that
are shared between tasks are frozen.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ttc.errors import PromptError
from ttc.validation import Float, Int, Settings

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "cancelled", "unknown"]
StopReason = Literal["budget", "success", "error", "settled"]
"""Why a strategy stopped before spending everything it planned to:

- ``"budget"``: a budget limit (tokens, USD, requests, seconds) could not pay for more work;
- ``"success"``: a verifier accepted a candidate and ``stop_on_success`` was set;
- ``"error"``: a provider failed for good; the candidates already paid for are kept;
- ``"settled"``: the vote could no longer change, so the remaining samples were not drawn.
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Trusted construction (``Completion.parsed``, ``Candidate.from_completion``, ``candidates``):
# what ``model_construct`` does, minus its generality. An instance gets its field dict (every
# field, in declaration order) and pydantic's three other slots directly, through the slots'
# own setters (cheaper than ``object.__setattr__`` by name), with no validation: only for values
# ttc has already checked, once per sample on the hot path. What users construct keeps going
# through validation.
_new = object.__new__
_set_dict = vars(BaseModel)["__dict__"].__set__
_set_fields_set = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private = vars(BaseModel)["__pydantic_private__"].__set__


def _defaults(model: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """A model's fields at their defaults, in declaration order (a required field as ``None``,
    for the caller to fill), and the fields whose default comes from a factory: a trusted
    construction starts from a copy of these, so a field added to the model is never missed."""
    template: dict[str, Any] = {}
    factories: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        template[name] = None
        if info.default_factory is not None:
            factories.append((name, info.default_factory))
        elif not info.is_required():
            try:
                hash(info.default)
                template[name] = info.default
            except TypeError:  # a mutable default: each instance gets its own copy
                factories.append((name, partial(deepcopy, info.default)))
    return template, tuple(factories)


class _FrozenSettings(Settings):
    """What users write: a bad value raises ``ttc.ConfigError`` naming the field."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(_FrozenSettings):
    """One chat message."""

    role: Role
    content: str


Prompt = str | Sequence[Message]
"""A prompt: raw text, or chat messages.

A chat endpoint wraps raw text in one user message; a completion endpoint (a base model) sends
raw text as it is and rejects chat messages.
"""


class SamplingParams(_FrozenSettings):
    """How to sample. The defaults suit repeated sampling (temperature 0.8, as in the papers)."""

    temperature: Float = Field(0.8, ge=0.0, le=2.0)
    top_p: Float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: Int = Field(512, ge=1, description="Upper bound on generated tokens per sample.")
    stop: tuple[str, ...] = ()
    seed: Int | None = None
    logprobs: bool = Field(False, strict=True)
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    prompt_logprobs: Int | None = Field(
        None,
        ge=0,
        le=20,
        description="Return the prompt tokens' logprobs with this many alternatives each "
        "(engines that declare the prompt_logprobs capability; used by PRM scoring).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> SamplingParams:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        return self


class GenerateRequest(_FrozenSettings):
    """One logical generation: ``n`` samples of one prompt with the same parameters."""

    prompt: str | tuple[Message, ...]
    params: SamplingParams = SamplingParams()
    n: Int = Field(1, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _messages_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: str | tuple[Message, ...]) -> str | tuple[Message, ...]:
        if isinstance(value, tuple) and not value:
            raise ValueError("a chat prompt needs at least one message")
        return value


class TokenLogprob(_Frozen):
    """The log probability of one generated token and, if asked, its top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


class Completion(_Frozen):
    """One sample from a model."""

    text: str
    finish_reason: FinishReason = "unknown"
    completion_tokens: int | None = Field(
        None, ge=0, description="Tokens of this sample, where the provider reports them."
    )
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = Field(
        None,
        description="One entry per prompt token, when asked for; the first token has no "
        "context, so its logprob is NaN.",
    )
    model: str = ""

    @classmethod
    def parsed(
        cls,
        text: str,
        finish_reason: FinishReason,
        completion_tokens: int | None,
        model: str,
        logprobs: tuple[TokenLogprob, ...] | None = None,
        prompt_logprobs: tuple[TokenLogprob, ...] | None = None,
    ) -> Completion:
        """A completion from values an adapter has already checked (types, ``finish_reason``
        one of ``FinishReason``, ``completion_tokens`` >= 0), built without validating them
        again: at hundreds of samples a response, validation cost more than all the rest of a
        sample's handling. Everything else constructs ``Completion(...)``."""
        obj = _new(cls)  # trusted construction (see _new)
        fields = _COMPLETION_DEFAULTS.copy()
        fields["text"] = text
        fields["finish_reason"] = finish_reason
        fields["completion_tokens"] = completion_tokens
        fields["logprobs"] = logprobs
        fields["prompt_logprobs"] = prompt_logprobs
        fields["model"] = model
        _set_dict(obj, fields)
        # Every field counts as set. One set for all: a frozen model never adds to it (copies
        # get their own), and a set per sample is one more object for the collector.
        _set_fields_set(obj, _COMPLETION_FIELDS)
        _set_extra(obj, None)
        _set_private(obj, None)
        return obj

    @classmethod
    def parsed_many(
        cls,
        texts: Sequence[str],
        finish_reasons: Sequence[FinishReason],
        completion_tokens: int | None,
        model: str,
    ) -> list[Completion]:
        """``parsed`` for many samples without logprobs (a native-n response's choices), in one
        loop: at hundreds of samples a response, a call per sample counts."""
        out: list[Completion] = []
        append = out.append
        copy = _COMPLETION_DEFAULTS.copy
        shared = _COMPLETION_FIELDS
        for text, finish in zip(texts, finish_reasons):
            obj = _new(cls)  # trusted construction (see _new)
            fields = copy()
            fields["text"] = text
            fields["finish_reason"] = finish
            fields["completion_tokens"] = completion_tokens
            fields["model"] = model
            _set_dict(obj, fields)
            _set_fields_set(obj, shared)
            _set_extra(obj, None)
            _set_private(obj, None)
            append(obj)
        return out


_COMPLETION_FIELDS = set(Completion.model_fields)
_COMPLETION_DEFAULTS, _ = _defaults(Completion)


class Usage(_Frozen):
    """What some work cost. Usages add up with ``+``.

    ``cost_usd`` covers only priced models; tokens of models with no known price are listed in
    ``unpriced_models`` rather than silently priced at zero.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    seconds: float = Field(
        0.0,
        description="Summed latency of the requests: not wall time (concurrent requests add "
        "up); a run's wall time is ``Result.elapsed_s``.",
    )
    undelivered_requests: int = Field(
        0,
        description="Requests whose outcome is unknown (timed out, connection reset, broken "
        "body, cancelled in flight): the provider may have billed them, but nothing arrived, "
        "so their tokens are not in this usage, while budgets keep their worst case.",
    )
    unpriced_models: frozenset[str] = frozenset()
    by_model: dict[str, Usage] = Field(
        default_factory=dict,
        description="The same counts for each model the work used, under its "
        "``provider/model`` name (scorers' and judges' models included): what each provider "
        "of a ``Router`` or ``Fallback`` did and cost. Its entries have no ``by_model``.",
    )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __hash__(self) -> int:  # hashable as before ``by_model`` (a dict) was added
        fields = tuple(v for k, v in self.__dict__.items() if k != "by_model")
        return hash((fields, tuple(sorted(self.by_model.items()))))

    def __add__(self, other: Usage) -> Usage:
        by_model = dict(self.by_model)
        for name, usage in other.by_model.items():
            mine = by_model.get(name)
            by_model[name] = usage if mine is None else mine + usage
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            requests=self.requests + other.requests,
            cost_usd=self.cost_usd + other.cost_usd,
            seconds=self.seconds + other.seconds,
            undelivered_requests=self.undelivered_requests + other.undelivered_requests,
            unpriced_models=self.unpriced_models | other.unpriced_models,
            by_model=by_model,
        )


class BudgetStop(_Frozen):
    """Which budget stopped a run, and at which limit (``Result.budget_stop``)."""

    scope: str = Field(
        description="``\"run\"`` for a strategy's run budget (this run's or an enclosing "
        "one's), else the model whose own budget it was, as ``provider/model``."
    )
    limit: Literal["tokens", "completion_tokens", "usd", "requests", "seconds"]
    limit_value: float = Field(description="The limit itself.")
    spent: float = Field(description="Spent or reserved when the next request was refused.")
    needed: float = Field(description="The worst case of the request that did not fit.")

    @property
    def provider(self) -> bool:
        """Whether it was a model's own budget (shared by every run on it), not a run's."""
        return self.scope != "run"


class Candidate(BaseModel):
    """A candidate answer: the sampled text, the answer extracted from it, and its scores.

    Mutable on purpose: scorers and verifiers fill in ``score``, ``verified`` and ``scores`` as a
    strategy works through its candidates.
    """

    model_config = ConfigDict(extra="forbid")

    text: str
    answer: str | None = None
    score: float | None = None
    verified: bool | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    finish_reason: FinishReason = "unknown"
    completion_tokens: int | None = None
    model: str = ""
    steps: list[str] | None = Field(
        None, description="The solution's steps, delimiters kept, from a step-wise search."
    )
    failure: str | None = Field(
        None,
        description="Why a checking verifier (unit tests, a proof checker, an SMT solver) "
        "rejected it: the checker's message, trimmed.",
    )

    @classmethod
    def from_completion(cls, completion: Completion, answer: str | None = None) -> Candidate:
        """A candidate for ``completion``'s text, with ``answer`` as its extracted answer.

        The completion's fields were validated when it was made, so they are taken as they
        are (one dict, no second validation); ``answer`` must be a str or ``None``."""
        if cls is not Candidate or (answer is not None and type(answer) is not str):
            return cls(  # a subclass may validate more; a str subclass is coerced
                text=completion.text,
                answer=answer,
                finish_reason=completion.finish_reason,
                completion_tokens=completion.completion_tokens,
                model=completion.model,
            )
        return candidates([completion], lambda _: answer)[0]

    # The candidates of a response share one set of set fields (``model_fields_set``) until
    # one of them changes: a set each was a quarter of a candidate's cost and nearly half of
    # the collector's runs at large n. A candidate gets its own before a field is set, and each
    # unpickled candidate has its own (copies make their own already).

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__pydantic_fields_set__ is _CANDIDATE_GIVEN:
            _set_fields_set(self, set(_CANDIDATE_GIVEN))
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        if state["__pydantic_fields_set__"] is _CANDIDATE_GIVEN:
            state["__pydantic_fields_set__"] = set(_CANDIDATE_GIVEN)
        return state


_CANDIDATE_DEFAULTS, _candidate_factories = _defaults(Candidate)
if _candidate_factories != (("scores", dict),):  # made inline in _candidates
    raise TypeError(
        f"Candidate's default factories changed: update _candidates ({_candidate_factories})"
    )
# As after Candidate(text=..., answer=..., ...): what a trusted candidate counts as set, shared
# by every trusted candidate until it changes (see ``Candidate.__setattr__``).
_CANDIDATE_GIVEN = {"text", "answer", "finish_reason", "completion_tokens", "model"}
_UNSEEN: Any = object()
# A completion's fields that a candidate takes over, read from its field dict in one C call.
_CANDIDATE_SOURCE = itemgetter("text", "finish_reason", "completion_tokens", "model")


def candidates(
    completions: Sequence[Completion],
    extract: Callable[[str], str | None],
    answers: dict[str, str | None] | None = None,
) -> list[Candidate]:
    """A ``Candidate`` for each completion, with ``extract(text)`` as its answer, extracted once
    per distinct text (an extractor is a function of its text: short answers and low
    temperatures repeat samples, and a repeat costs a dict lookup). The completions' fields
    were checked when they were made, so they are taken as they are, in one loop (no second
    validation); an answer that is not a str or ``None`` goes through validation (which
    refuses it; a str subclass is coerced).

    ``answers``: the texts already read by this ``extract`` and their answers, filled in here;
    pass the same dict for every response of a draw, so that a text repeated across responses
    (one sample a request, by fan-out) is read once too."""
    return _candidates(map(_CANDIDATE_SOURCE, map(vars, completions)), extract, answers)


def _candidates(
    rows: Iterable[tuple[str, FinishReason, int | None, str]],
    extract: Callable[[str], str | None],
    answers: dict[str, str | None] | None = None,
) -> list[Candidate]:
    """``candidates`` from each sample's text, finish reason, completion tokens and model."""
    if answers is None:
        answers = {}
    seen = answers.get
    out: list[Candidate] = []
    append = out.append
    copy = _CANDIDATE_DEFAULTS.copy
    given = _CANDIDATE_GIVEN
    for text, finish, tokens, model in rows:
        answer = seen(text, _UNSEEN)
        if answer is _UNSEEN:
            answer = extract(text)
            if answer is not None and type(answer) is not str:
                answer = Candidate(text=text, answer=answer).answer  # refused, or coerced
            answers[text] = answer
        obj = _new(Candidate)  # trusted construction (see _new)
        fields = copy()
        fields["text"] = text
        fields["answer"] = answer
        fields["finish_reason"] = finish
        fields["completion_tokens"] = tokens
        fields["model"] = model
        fields["scores"] = {}  # the one default factory (checked where the defaults are read)
        _set_dict(obj, fields)
        _set_fields_set(obj, given)  # shared until the candidate changes
        _set_extra(obj, None)
        _set_private(obj, None)
        append(obj)
    return out


class Samples:
    """One response's samples: ``Completion`` objects, or the columns an adapter parsed them
    into (texts, finish reasons, and the completion tokens and model they share), from which
    the objects are built only when someone asks (``completions()``). A sampling strategy
    makes its candidates straight from the columns (``candidates(extract)``): at hundreds of
    samples a response, an object per sample that nobody reads costs more CPU (and collector
    time) than everything else the client does with it."""

    __slots__ = ("_completions", "_finish_reasons", "_model", "_texts", "_tokens")

    def __init__(
        self,
        texts: list[str],
        finish_reasons: list[FinishReason],
        completion_tokens: int | None,
        model: str,
    ) -> None:
        """Samples from values an adapter has already checked (as for
        ``Completion.parsed_many``: each text a str, each finish reason a ``FinishReason``,
        ``completion_tokens`` each sample's own count, >= 0, or ``None``)."""
        if len(texts) != len(finish_reasons):
            raise ValueError(f"{len(texts)} texts for {len(finish_reasons)} finish reasons")
        self._texts = texts
        self._finish_reasons = finish_reasons
        self._tokens = completion_tokens
        self._model = model
        self._completions: list[Completion] | None = None

    @classmethod
    def of(cls, completions: list[Completion]) -> Samples:
        """Samples that are these completions (an adapter that builds them itself, with
        logprobs say, or a cache hit)."""
        obj = _new(cls)
        obj._completions = completions
        return obj

    def __len__(self) -> int:
        got = self._completions
        return len(got) if got is not None else len(self._texts)

    def __repr__(self) -> str:
        return f"Samples({len(self)})"

    def completions(self) -> list[Completion]:
        """The samples as ``Completion`` objects (built on the first call; the same list
        after)."""
        got = self._completions
        if got is None:
            got = self._completions = Completion.parsed_many(
                self._texts, self._finish_reasons, self._tokens, self._model
            )
        return got

    def texts(self) -> list[str]:
        """Each sample's text."""
        got = self._completions
        return [c.text for c in got] if got is not None else self._texts

    def token_counts(self) -> list[int | None]:
        """Each sample's own completion tokens, where known."""
        got = self._completions
        if got is not None:
            return [c.completion_tokens for c in got]
        return [self._tokens] * len(self._texts)

    def head(self, k: int) -> Samples:
        """The first ``k`` samples (all of them when there are no more)."""
        if len(self) <= k:
            return self
        got = self._completions
        if got is not None:
            return Samples.of(got[:k])
        return Samples(self._texts[:k], self._finish_reasons[:k], self._tokens, self._model)

    def candidates(
        self,
        extract: Callable[[str], str | None],
        answers: dict[str, str | None] | None = None,
    ) -> list[Candidate]:
        """A ``Candidate`` for each sample, as ``ttc.types.candidates`` makes them from the
        completions (``answers`` as there), without building the completions first."""
        got = self._completions
        if got is not None:
            return candidates(got, extract, answers)
        rows = zip(self._texts, self._finish_reasons, repeat(self._tokens), repeat(self._model))
        return _candidates(rows, extract, answers)


class TraceEvent(_Frozen):
    """One request as the runtime saw it: what was asked, how long it took, how it ended."""

    model: str
    n: int
    attempt: int
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    choices: int = 0
    error: str | None = None
    operation: str | None = Field(
        None,
        description="What the request did, by the OpenTelemetry GenAI names: ``chat``, "
        "``text_completion``, or the kind of a request that generates nothing (``score``).",
    )


class Routing(_Frozen):
    """Where ``ComputeOptimal`` sent a question: its difficulty estimate from the probe (in
    [0, 1], higher is easier), how it was measured, the policy's bin and its action."""

    difficulty: float
    measure: str
    bin: str
    action: str
    probe_n: int


class Result(BaseModel):
    """What a strategy returns.

    ``answer`` is the selected answer (``None`` when there is none); ``best`` the candidate it came
    from; ``candidates`` every candidate paid for, in the order they arrived; ``votes`` the
    selector's tally per answer; ``stopped_by`` says why the strategy stopped early, if it did.
    """

    model_config = ConfigDict(extra="forbid")

    answer: str | None
    best: Candidate | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    votes: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Usage()
    stopped_by: StopReason | None = None
    tied: list[str] = Field(
        default_factory=list,
        description="The answers that tied for the most votes, when there was a tie (the "
        "earliest of them won); empty otherwise.",
    )
    unreadable_verdicts: int = Field(
        0,
        description="Step scores that were guesses: verdicts a StepJudge could not read, "
        "scored 0.5 (a warning is logged once per run when there are any).",
    )
    budget_stop: BudgetStop | None = Field(
        None,
        description="With stopped_by='budget': which budget (a run's or a model's) and which "
        "limit stopped the run.",
    )
    errors: list[str] = Field(default_factory=list)
    pass_at_k: dict[int, float] = Field(
        default_factory=dict,
        description="Unbiased pass@k for this question, where a verifier judged the candidates.",
    )
    confidence: float | None = Field(
        None,
        description="AdaptiveConsistency: the stopping rule's posterior probability that the "
        "answer is the majority answer of the model's answer distribution.",
    )
    routing: Routing | None = Field(
        None, description="ComputeOptimal: the probe's difficulty estimate, bin and action."
    )
    elapsed_s: float = Field(
        0.0,
        description="Wall-clock seconds the run took (``usage.seconds`` is the requests' "
        "latencies summed, which concurrency makes larger).",
    )
    trace: list[TraceEvent] = Field(default_factory=list)
    tree: list[dict[str, Any]] | None = Field(
        None,
        description="A step-wise search's tree, one entry a round: each beam's step, scores "
        "and whether it was kept, pruned or finished.",
    )

    @property
    def cost_usd(self) -> float:
        """``usage.cost_usd``: what the run cost, priced models only."""
        return self.usage.cost_usd

    @property
    def verified(self) -> bool | None:
        """Whether any candidate was verified (``None`` if nothing was verified at all)."""
        flags = [c.verified for c in self.candidates if c.verified is not None]
        return any(flags) if flags else None

    @property
    def num_correct(self) -> int:
        """How many candidates a verifier accepted."""
        return sum(1 for c in self.candidates if c.verified)


_EXPECTED = "text (a str) or a list of chat messages ({'role': ..., 'content': ...} or Message)"
_SURROGATE = re.compile("[\ud800-\udfff]")


def as_request_prompt(prompt: Prompt) -> str | tuple[Message, ...]:
    """Normalize a user's prompt (text, messages or dicts) to the form requests carry.

    A bad prompt raises ``PromptError`` here, at the boundary, saying what was expected and
    where (message index, position) it went wrong: not deep inside a request.
    """
    if isinstance(prompt, str):
        if prompt.isascii():  # the common case: one scan, no regex
            if prompt and not prompt.isspace():
                return prompt
        else:
            _check_text(prompt, "prompt")
            if prompt.strip():
                return prompt
        raise PromptError("prompt: the text is empty; expected a question")
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        raise PromptError(f"prompt: expected {_EXPECTED}, got bytes; decode them first")
    if isinstance(prompt, dict):
        raise PromptError(
            f"prompt: expected {_EXPECTED}, got one dict; put the message in a list: [{{...}}]"
        )
    if not isinstance(prompt, (list, tuple)):
        raise PromptError(f"prompt: expected {_EXPECTED}, got {type(prompt).__name__}")
    if not prompt:
        raise PromptError("prompt: the list of messages is empty; expected at least one")
    out = []
    for i, item in enumerate(prompt):
        if isinstance(item, Message):
            message = item
        elif isinstance(item, dict):
            try:
                message = Message.model_validate(item)
            except ValueError as exc:
                raise PromptError(f"prompt[{i}]: not a chat message: {exc}") from None
        else:
            raise PromptError(
                f"prompt[{i}]: expected a chat message ({{'role': ..., 'content': ...}} or "
                f"Message), got {type(item).__name__}"
            )
        if not message.content.isascii():
            _check_text(message.content, f"prompt[{i}].content")
        out.append(message)
    return tuple(out)


def _check_text(text: str, where: str) -> None:
    """A ``PromptError`` for a lone surrogate (``json.loads('"\\ud800"')`` makes one): it is
    not Unicode, so no request could encode it."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise PromptError(
            f"{where}: invalid text: lone surrogate {match.group()!r} at position "
            f"{match.start()} (not valid Unicode; fix or drop it in the source data)"
        )
