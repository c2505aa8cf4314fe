"""Process reward models (Lightman et al. 2023; Math-Shepherd): a score for every step.

A PRM scores each step of a partial solution given the question and the steps before it.
Step-wise search (``BeamPRM``, ``Lookahead``, ``DVTS``) scores every beam of a round in one
``score_steps`` call, so a PRM can batch them (one forward pass, one request). Beams share
prefixes, so the base class caches scores by (question, prefix steps, step): a step is scored
once however many beams carry it. ``aggregate`` turns a beam's step scores into one number;
Snell et al. found the *last* step's score best, hence the default.

``ArithmeticPRM`` is a rule-based PRM that recomputes the arithmetic written in each step: a
strict, cheap check that needs no model and runs anywhere.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from ttc.errors import ConfigError
from ttc.runtime import tracing
from ttc.scoring.base import Scorer
from ttc.types import Candidate, Prompt
from ttc.validation import check_float, check_int

__all__ = [
    "Aggregation",
    "ArithmeticPRM",
    "PRMScorer",
    "ProcessRewardModel",
    "aggregate",
    "check_aggregation",
    "check_arithmetic",
    "safe_eval",
]

Aggregation = Literal["last", "min", "prod", "mean"]
"""How a beam's step scores become one score: the last step's (default; best in Snell et al.),
the weakest step's, their product, or their mean."""

_AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def check_aggregation(how: str) -> Aggregation:
    """``how`` if it names an aggregation; else a ``ConfigError`` listing the choices."""
    if how not in _AGGREGATIONS:
        raise ConfigError(f"aggregation must be one of {', '.join(_AGGREGATIONS)}; got {how!r}")
    return how  # type: ignore[return-value]


def aggregate(scores: Sequence[float], how: Aggregation = "last") -> float:
    """One score for a solution from its step scores. No steps scores 0.0 (nothing to trust)."""
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ConfigError(f"aggregation must be one of {', '.join(_AGGREGATIONS)}; got {how!r}")


_Key = tuple[str, tuple[str, ...]]  # (question, steps up to and including the scored one)


class ProcessRewardModel(ABC):
    """Scores every step of many partial solutions in one call; higher is better.

    Subclasses implement ``_score_steps`` (one score per step of each solution, in order). The
    public ``score_steps`` adds the cache: only solutions with a step not scored before are
    passed on, cut after their last unscored step, and identical prefixes are sent once.

    Args:
        cache_size: how many step scores to remember (least recently used go first); 0 turns
            the cache off.
    """

    #: The key under which strategies store this PRM's score in ``Candidate.scores``.
    name: str = "prm"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # PRM calls become spans under ttc.instrument() (see ttc.runtime.tracing).
        super().__init_subclass__(**kwargs)
        tracing.trace_methods(cls, ("score_steps",))

    def __init__(self, *, cache_size: int = 100_000) -> None:
        self.cache_size: int = check_int("cache_size", cache_size, ge=0)
        self._cache: OrderedDict[_Key, float] = OrderedDict()
        #: Step scores computed so far (cache misses): what scoring really cost.
        self.steps_scored = 0
        #: Steps answered from the cache.
        self.cache_hits = 0

    @abstractmethod
    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """One score per step of each solution, in order. Called only with non-empty
        solutions."""

    async def score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Scores of every step of every solution (a list of steps, delimiters included).

        A solution with an unscored step is passed on cut after that step (the PRM needs the
        steps before it as context); identical prefixes go once; the rest comes from the cache.
        """
        known: dict[_Key, float] = {}  # read before any await: a concurrent call may evict
        todo: dict[tuple[str, ...], None] = {}  # prefixes to score, each once, in order
        missing: set[_Key] = set()
        for steps in solutions:
            last_missing = -1
            for i in range(len(steps)):
                key = (question, tuple(steps[: i + 1]))
                cached = self._cache.get(key) if self.cache_size else None
                if cached is None:
                    last_missing = i
                    missing.add(key)
                else:
                    known[key] = cached
                    self._cache.move_to_end(key)
            if last_missing >= 0:
                todo[tuple(steps[: last_missing + 1])] = None
        fresh: dict[_Key, float] = {}
        if todo:
            batch = list(todo)
            try:
                got = await self._score_steps(question, batch)
            except Exception as exc:
                self._keep_paid(question, solutions, known, missing, exc)
                raise
            if len(got) != len(batch):
                raise ValueError(
                    f"{type(self).__name__} returned {len(got)} score lists for "
                    f"{len(batch)} solutions"
                )
            for steps, scores in zip(batch, got):
                if len(scores) != len(steps):
                    raise ValueError(
                        f"{type(self).__name__} returned {len(scores)} scores for "
                        f"{len(steps)} steps"
                    )
                for i, value in enumerate(scores):
                    key = (question, steps[: i + 1])
                    if key in missing:
                        fresh[key] = float(value)
        self.steps_scored += len(fresh)
        self.cache_hits += sum(len(steps) for steps in solutions) - len(missing)
        known.update(fresh)
        self._remember(fresh)
        return [
            [known[(question, tuple(steps[: i + 1]))] for i in range(len(steps))]
            for steps in solutions
        ]

    def _keep_paid(
        self,
        question: str,
        solutions: Sequence[Sequence[str]],
        known: dict[_Key, float],
        missing: set[_Key],
        exc: Exception,
    ) -> None:
        """A call failed part-way (a budget ran out, say): keep the step scores it did pay for.
        A PRM that scores step by step puts them on the error as ``paid_scores`` (prefix ->
        score); they are cached and counted, and the error gets ``partial_rows``: per solution,
        its scores where every step is known, else ``None``."""
        paid: dict[tuple[str, ...], float] = getattr(exc, "paid_scores", None) or {}
        fresh = {
            key: float(value)
            for prefix, value in paid.items()
            if (key := (question, tuple(prefix))) in missing
        }
        self.steps_scored += len(fresh)
        known.update(fresh)
        self._remember(fresh)
        rows: list[list[float] | None] = []
        for steps in solutions:
            keys = [(question, tuple(steps[: i + 1])) for i in range(len(steps))]
            rows.append([known[k] for k in keys] if all(k in known for k in keys) else None)
        exc.partial_rows = rows  # type: ignore[attr-defined]

    def pop_unreadable(self) -> int:
        """How many step scores of the current run were guesses because a verdict could not be
        read (``StepJudge`` scores those 0.5), forgetting the count; 0 for PRMs that always
        read a score. Step-wise search calls it once, at the end of a run."""
        return 0

    def _remember(self, fresh: dict[_Key, float]) -> None:
        if self.cache_size == 0:
            return
        self._cache.update(fresh)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached score."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------------------------
# Safe arithmetic

tracing.trace_methods(ProcessRewardModel, ("score_steps",))

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_MAX_EXPRESSION = 200  # characters: a step's arithmetic is short; anything longer is not checked


def safe_eval(expression: str) -> float:
    """The value of an arithmetic expression of numbers, ``+ - * /`` and parentheses.

    Parsed with ``ast`` and walked by hand: names, calls, attributes, powers and everything else
    raise ``ValueError``, so text from a model is never executed. Division by zero raises
    ``ZeroDivisionError``.
    """
    if len(expression) > _MAX_EXPRESSION:
        raise ValueError("expression too long to check")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    return _value(tree.body)


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        raise ValueError(f"not a number: {node.value!r}")
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"operator not allowed: {type(node.op).__name__}")
        return op(_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _value(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    raise ValueError(f"not allowed in arithmetic: {type(node).__name__}")


# A number as written in prose: "$1,234.50", "15", "150%".
_NUM = r"\$?\s*\d+(?:,\d{3})*(?:\.\d+)?(?:\s*%)?"
# An operator between numbers; "x" only when a number (or a parenthesis) follows.
_OP = r"\s*(?:[-+*/×÷·–−]|x(?=\s*[\d$(]))\s*"
_EXPR = rf"-?\s*\(*\s*{_NUM}\s*\)*(?:{_OP}\(*\s*{_NUM}\s*\)*)+"
_RESULT = r"-?\s*\$?\s*\d+(?:,\d{3})*(?:\.\d+)?"
_EQUATION = re.compile(rf"(?<![\w.,])({_EXPR})\s*=\s*({_RESULT})(?![\d,]*\.?\d)")
_GSM8K_CALC = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


def _to_python(text: str) -> str:
    """Prose arithmetic as Python: no ``$`` or thousands commas, ``x``/``×``/``÷`` and dashes as
    operators, ``%`` as a hundredth."""
    s = text.replace("$", "").replace(",", "")
    s = s.replace("×", "*").replace("·", "*").replace("÷", "/").replace("–", "-").replace("−", "-")
    s = re.sub(r"(?<=[\d)\s])x(?=\s*[\d(])", "*", s)
    s = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", s)
    return s


def _balanced(expression: str) -> str:
    """Drop the unmatched parentheses a regex can catch at the edges ("(3 + 4 = 7")."""
    s = expression.strip()
    while s.startswith("(") and s.count("(") > s.count(")"):
        s = s[1:].lstrip()
    while s.endswith(")") and s.count(")") > s.count("("):
        s = s[:-1].rstrip()
    return s


def _matches(computed: float, written: str) -> bool:
    """Whether the written result is the computed value, allowing the rounding its decimals
    show ("10 / 3 = 3.33" is right, "10 / 3 = 3" is not)."""
    target = float(written)
    decimals = len(written.split(".", 1)[1]) if "." in written else 0
    tolerance = 0.5 * 10.0**-decimals if decimals else 0.0
    return abs(computed - target) <= tolerance + 1e-9 * max(1.0, abs(target))


def _check(expression: str, result: str) -> bool | None:
    """True or False for a checkable ``expression = result``; ``None`` if it is not arithmetic."""
    try:
        computed = safe_eval(_balanced(_to_python(expression)))
        written = _to_python(result).replace(" ", "")
        float(written)
    except ValueError:
        return None
    except ZeroDivisionError:
        return False
    return _matches(computed, written)


def check_arithmetic(text: str) -> list[tuple[str, bool]]:
    """Every checkable calculation in ``text`` with its verdict, in order.

    Finds GSM8K's calculator annotations (``<<3*5=15>>``) and written equations (``3 * 5 = 15``,
    ``$80,000 + $50,000 = $130,000``, ``5 x 3 = 15``, chains such as ``2 * 3 = 6 * 2 = 12``).
    """
    found: list[tuple[str, bool]] = []
    for match in _GSM8K_CALC.finditer(text):
        verdict = _check(match.group(1), match.group(2))
        if verdict is not None:
            found.append((match.group(0), verdict))
    plain = _GSM8K_CALC.sub("", text)
    pos = 0
    while (equation := _EQUATION.search(plain, pos)) is not None:
        verdict = _check(equation.group(1), equation.group(2))
        if verdict is not None:
            found.append((equation.group(0).strip(), verdict))
        pos = equation.start(2)  # a chain's result starts the next equation
    return found


class ArithmeticPRM(ProcessRewardModel):
    """A rule-based PRM: recomputes the arithmetic written in each step.

    A step with a wrong calculation scores ``wrong`` (default 0.0), one whose calculations are
    all right scores ``right`` (1.0), and one with nothing to check scores ``neutral`` (0.5).
    Strict and cheap: it cannot judge reasoning, only sums, but a wrong sum is a wrong step.
    """

    name = "arithmetic"

    def __init__(
        self,
        *,
        right: float = 1.0,
        wrong: float = 0.0,
        neutral: float = 0.5,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.right: float = check_float("right", right)
        self.wrong: float = check_float("wrong", wrong)
        self.neutral: float = check_float("neutral", neutral)

    def score_step(self, step: str) -> float:
        """The score of one step's text."""
        verdicts = [ok for _, ok in check_arithmetic(step)]
        if not verdicts:
            return self.neutral
        return self.right if all(verdicts) else self.wrong

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        return [[self.score_step(step) for step in steps] for steps in solutions]

    def __repr__(self) -> str:
        return f"ArithmeticPRM(right={self.right}, wrong={self.wrong}, neutral={self.neutral})"


class PRMScorer(Scorer):
    """A PRM as an outcome scorer for whole samples (PRM-weighted best-of-N, Snell et al.).

    Each candidate's text is cut into steps at ``delimiter`` (kept at the end of every step
    but the last, as step-wise search writes them), the PRM scores the steps, and
    ``aggregation`` makes one score. All candidates of a call go to the PRM in one batch.

    Args:
        prm: the process reward model, e.g. ``ArithmeticPRM()``.
        delimiter: what separates the steps of a sample (``"\\n\\n"``; ``"\\n"`` for one step
            a line).
        aggregation: ``last`` (default), ``min``, ``prod`` or ``mean``.
    """

    def __init__(
        self,
        prm: ProcessRewardModel,
        *,
        delimiter: str = "\n\n",
        aggregation: Aggregation | str = "last",
    ) -> None:
        if not isinstance(prm, ProcessRewardModel):
            raise ConfigError(f"prm must be a ProcessRewardModel, got {type(prm).__name__}")
        if not delimiter:
            raise ConfigError("delimiter must not be empty")
        self.prm = prm
        self.delimiter = delimiter
        self.aggregation = check_aggregation(aggregation)
        self.name = prm.name

    def steps(self, text: str) -> list[str]:
        """``text`` as steps, each but the last ending with the delimiter; blank ones dropped."""
        parts = text.split(self.delimiter)
        steps = [part + self.delimiter for part in parts[:-1]] + [parts[-1]]
        return [step for step in steps if step.strip()]

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        question = prompt if isinstance(prompt, str) else "\n".join(m.content for m in prompt)
        solutions = [self.steps(c.text) for c in candidates]
        present = [steps for steps in solutions if steps]
        scored = iter(await self.prm.score_steps(question, present)) if present else iter(())
        return [aggregate(next(scored), self.aggregation) if steps else 0.0 for steps in solutions]

    def __repr__(self) -> str:
        return f"PRMScorer({self.prm!r}, aggregation={self.aggregation!r})"
