"""Verifiers against a known answer (math equivalence, GSM8K numbers, a regex) and adapters that
turn plain functions into verifiers and scorers.

``MathAnswer`` grades with math-verify in a worker process (``ttc.scoring._workers``): sympy can
take unbounded time on a pathological expression, and only a process can be stopped from
outside. math-verify and sympy are imported in the worker only, so importing ``ttc.scoring``
stays cheap.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction
from typing import Any, cast

import anyio.to_thread

from ttc.errors import ConfigError
from ttc.scoring import _workers
from ttc.scoring._workers import run_all
from ttc.scoring.base import Scorer, Verifier
from ttc.scoring.extract import extract_answer, gsm8k_reference, normalize_answer
from ttc.types import Candidate, Prompt
from ttc.validation import check_float

__all__ = [
    "FunctionScorer",
    "FunctionVerifier",
    "GSM8KAnswer",
    "MathAnswer",
    "Regex",
    "as_scorer",
    "as_verifier",
]


def _as_math(answer: str) -> str:
    """Give math-verify something it parses: plain answers go inside ``$...$``."""
    s = answer.strip()
    if any(mark in s for mark in ("$", "\\boxed", "\\(", "\\[")):
        return s
    if _fraction(s) is not None:
        s = normalize_answer(s)  # "1,234" would read as the pair (1, 234)
    return f"${s}$"


class MathAnswer(Verifier):
    """Correct iff math-verify finds the candidate's answer equivalent to ``gold``.

    ``verify(parse(gold), parse(prediction))``, gold first (math-verify is not symmetric). The
    candidate's ``answer`` is graded if it has one, else its whole text (math-verify then
    finds the last boxed or stated answer itself). Each grading runs in a shared pool of at most
    two worker processes and gets ``timeout`` seconds of worker time; an overrun is a wrong
    answer, and the pool is killed and replaced so the expression cannot hold up later calls.
    Verdicts are cached per (gold, prediction).

    The workers are plain ``python -c`` processes, not ``multiprocessing`` ones: they never
    import your ``__main__``, so a script needs no ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, gold: str, timeout: float = 5.0) -> None:
        if not isinstance(gold, str) or not gold.strip():
            raise ConfigError(f"gold must be a non-empty string, got {gold!r}")
        check_float("timeout", timeout, gt=0)
        self.gold = gold
        self.timeout = float(timeout)
        self._gold_math = _as_math(gold)

    def __repr__(self) -> str:
        return f"MathAnswer(gold={self.gold!r})"

    def _prediction(self, candidate: Candidate) -> str:
        if candidate.answer is not None:
            return _as_math(candidate.answer)
        return candidate.text

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        predictions = [self._prediction(c) for c in candidates]
        verdicts: dict[str, bool] = {}

        async def grade(pred: str) -> None:
            verdicts[pred] = await _workers.grade(self._gold_math, pred, self.timeout)

        unique = [p for p in dict.fromkeys(predictions) if p.strip()]
        await run_all([functools.partial(grade, p) for p in unique])
        return [verdicts.get(pred, False) for pred in predictions]


# --------------------------------------------------------------------------------------------
# Pure-Python verifiers.


def _fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        return Fraction(normalize_answer(text))
    except (ValueError, ZeroDivisionError):
        return None


class GSM8KAnswer(Verifier):
    """Correct iff the candidate's number equals the GSM8K reference exactly (as rationals).

    ``gold`` is a full GSM8K solution (``... #### 1,234``) or the bare number. The candidate's
    ``answer`` is used if set, else ``extract_answer`` of its text; a non-number is wrong.
    """

    def __init__(self, gold: str) -> None:
        reference = gsm8k_reference(gold) if "####" in gold else gold
        value = _fraction(reference)
        if value is None:
            raise ConfigError(f"gold must be a number or a GSM8K solution, got {gold!r}")
        self.gold = gold
        self.reference = value

    def __repr__(self) -> str:
        return f"GSM8KAnswer(gold={self.gold!r})"

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        out = []
        for c in candidates:
            answer = c.answer if c.answer is not None else extract_answer(c.text)
            out.append(_fraction(answer) == self.reference)
        return out


class Regex(Verifier):
    """A regular expression over the candidate's text.

    With ``gold``: correct iff group 1 (or the whole match, if the pattern has no group) of the
    *last* match equals ``gold`` after ``normalize_answer``. Without: correct iff it matches.
    """

    def __init__(self, pattern: str, gold: str | None = None) -> None:
        try:
            self.regex = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise ConfigError(
                f"pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        self.pattern = pattern
        self.gold = gold
        self._gold = normalize_answer(gold) if gold is not None else None

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r}, gold={self.gold!r})"

    def _check(self, text: str) -> bool:
        if self._gold is None:
            return self.regex.search(text) is not None
        last = None
        for last in self.regex.finditer(text):  # noqa: B007 - only the last one counts
            pass
        if last is None:
            return False
        found = last.group(1) if self.regex.groups else last.group(0)
        return found is not None and normalize_answer(found) == self._gold

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        return [self._check(c.text) for c in candidates]


# --------------------------------------------------------------------------------------------
# Functions as verifiers and scorers.

VerifyFn = Callable[[str], "bool | Awaitable[bool]"]
ScoreFn = Callable[[str], "float | Awaitable[float]"]


def _is_async(fn: Callable[..., Any]) -> bool:
    # An object whose __call__ is a coroutine function counts too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def _call(fn: Callable[[str], Any], text: str) -> Any:
    """Run ``fn(text)``: awaited if async, in a worker thread if not, so the loop never blocks."""
    if _is_async(fn):
        result = fn(text)
    else:
        result = await anyio.to_thread.run_sync(fn, text)
    if inspect.isawaitable(result):
        result = await result
    return result


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


class FunctionVerifier(Verifier):
    """A function ``text -> bool`` (sync or async) as a verifier; candidates run concurrently.

    A sync function runs in a worker thread, so a slow one does not stall other requests.
    """

    def __init__(self, fn: VerifyFn) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be callable, got {fn!r}")
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionVerifier({_name_of(self.fn)})"

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        out: list[bool] = [False] * len(candidates)

        async def one(i: int, text: str) -> None:
            out[i] = bool(await _call(self.fn, text))

        await run_all([functools.partial(one, i, c.text) for i, c in enumerate(candidates)])
        return out


class FunctionScorer(Scorer):
    """A function ``text -> float`` (sync or async) as a scorer; higher is better.

    ``name`` is the key of its score in ``Candidate.scores`` (default ``"score"``).
    """

    def __init__(self, fn: ScoreFn, *, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        if name is not None:
            self.name = name

    def __repr__(self) -> str:
        return f"FunctionScorer({_name_of(self.fn)})"

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        out: list[float] = [0.0] * len(candidates)

        async def one(i: int, text: str) -> None:
            value = await _call(self.fn, text)
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"scorer {_name_of(self.fn)} returned {value!r}, not a number"
                ) from None

        await run_all([functools.partial(one, i, c.text) for i, c in enumerate(candidates)])
        return out


def as_verifier(obj: object) -> Verifier:
    """A ``Verifier`` as is; a callable ``text -> bool`` wrapped in ``FunctionVerifier``."""
    if isinstance(obj, Verifier):
        return obj
    if isinstance(obj, Scorer):
        raise ConfigError(
            f"verifier: {obj!r} is a Scorer (it gives numbers, not verdicts); "
            "pass it as a scorer, or wrap a function text -> bool"
        )
    if callable(obj):
        return FunctionVerifier(cast(VerifyFn, obj))
    raise ConfigError(
        f"verifier must be a Verifier or a function text -> bool, got {type(obj).__name__}"
    )


def as_scorer(obj: object) -> Scorer:
    """A ``Scorer`` (verifiers included) as is; a callable ``text -> float`` wrapped."""
    if isinstance(obj, Scorer):
        return obj
    if callable(obj):
        return FunctionScorer(cast(ScoreFn, obj))
    raise ConfigError(
        f"scorer must be a Scorer, a Verifier or a function text -> float, got {type(obj).__name__}"
    )
