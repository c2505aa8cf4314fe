"""A generative step judge: any ttc ``Model`` asked whether each step of a solution is correct.

Hosted providers serve no process reward model, but any chat model can judge a step. So that
step-wise search (``BeamPRM``, ``Lookahead``, ``DVTS``) works through them, ``StepJudge`` sends
one request per (solution, step): the question, the earlier steps and the step to check, asking
for a one-word verdict. Where the model returns logprobs, the score is the probability of the
"correct" verdict read from the first generated token's top alternatives (a graded score ranks
beams better than a 0/1 verdict); otherwise the verdict text gives 1.0 or 0.0, and 0.5 when it
cannot be read: such guesses are counted (``Result.unreadable_verdicts``) and logged once per run,
since a judge that rambles silently turns the search into a random one.

The requests are ordinary ``Model.generate`` calls, concurrent within a round, so the runtime's
fan-out, rate limits, retries and budgets (the model's and the run's) apply to them as to the
search's own generations; the base class's cache keeps a step from being judged twice. When a
budget runs out part-way through a round, the verdicts already paid for are kept (cached, and
given to the beams they complete), not dropped with the round.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Sequence

import anyio

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime.context import RunContext, current_run
from ttc.runtime.model import Model
from ttc.scoring.prm import ProcessRewardModel
from ttc.types import Completion, SamplingParams
from ttc.validation import check_int

__all__ = ["DEFAULT_JUDGE_TEMPLATE", "StepJudge"]

#: The judge's request. ``{question}``, ``{previous}`` (the earlier steps, or a note that there
#: are none) and ``{step}`` are filled in. It ends with "Verdict:" so that a completion-style
#: model answers in place too.
DEFAULT_JUDGE_TEMPLATE = """You are checking a step-by-step solution, one step at a time.

Problem:
{question}

Earlier steps:
{previous}

Step to check:
{step}

Is the step to check correct, given the problem and the earlier steps? Answer with one word: \
correct or incorrect.
Verdict:"""

_NO_PREVIOUS = "(none: this is the first step)"
_RUNS_KEPT = 1024  # runs whose unreadable count is held until the search collects it
logger = logging.getLogger("ttc.step_judge")
_WORD = re.compile(r"[\w+-]+")


class StepJudge(ProcessRewardModel):
    """A process reward model that asks a ttc ``Model`` whether each step is correct.

    Args:
        model: any ttc ``Model`` (chat or completions; ``Groq``, ``OpenAI``, ``VLLMServer``...).
            It may be the model the search generates with.
        template: the judge's prompt, with ``{question}``, ``{previous}`` and ``{step}``.
        yes: verdict words that mean the step is correct (compared lowercased).
        no: verdict words that mean it is not; checked before ``yes``.
        use_logprobs: read the verdict's probability where the model returns logprobs
            (``None``: whenever ``model.capabilities.logprobs``); else the verdict text.
        renormalize: with logprobs, score P(yes) / (P(yes) + P(no)) among the top tokens
            instead of P(yes) alone (robust to mass on formatting tokens; but any visible
            "yes" with no visible "no" scores 1.0).
        top_logprobs: how many alternatives of the first token to ask for.
        params: the judge's sampling parameters (default greedy, 8 tokens).
        cache_size: step scores remembered (see ``ProcessRewardModel``).
    """

    name = "step_judge"

    def __init__(
        self,
        model: Model,
        *,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        yes: Sequence[str] = ("correct", "yes", "+", "right"),
        no: Sequence[str] = ("incorrect", "no", "-", "wrong", "not"),
        use_logprobs: bool | None = None,
        renormalize: bool = False,
        top_logprobs: int = 10,
        params: SamplingParams | None = None,
        cache_size: int = 100_000,
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not isinstance(model, Model):
            raise ConfigError(f"model must be a ttc Model, got {type(model).__name__}")
        for field in ("{question}", "{step}"):
            if field not in template:
                raise ConfigError(f"template must contain the placeholder {field}")
        self.yes = tuple(w.lower() for w in yes)
        self.no = tuple(w.lower() for w in no)
        if not self.yes or not self.no or set(self.yes) & set(self.no):
            raise ConfigError("yes and no must be non-empty and share no word")
        check_int("top_logprobs", top_logprobs, ge=1)
        caps = model.capabilities
        if use_logprobs and not caps.logprobs:
            raise ConfigError(f"use_logprobs: {model.name} does not return log probabilities")
        self.model = model
        self.template = template
        self.use_logprobs = caps.logprobs if use_logprobs is None else use_logprobs
        self.renormalize = renormalize
        base = params or SamplingParams(temperature=0.0, max_tokens=8)
        if self.use_logprobs:
            top = max(1, min(top_logprobs, caps.max_top_logprobs))
            base = base.model_copy(update={"logprobs": True, "top_logprobs": top})
        self.params = base
        #: Verdicts that could not be read (scored 0.5), over this judge's life.
        self.unreadable = 0
        self._unreadable_runs: OrderedDict[RunContext | None, int] = OrderedDict()

    def __repr__(self) -> str:
        return f"StepJudge({self.model!r})"

    def prompt(self, question: str, steps: Sequence[str]) -> str:
        """The judge's prompt for the last of ``steps``."""
        previous = "".join(steps[:-1]).strip() or _NO_PREVIOUS
        return (
            self.template.replace("{previous}", previous)
            .replace("{step}", steps[-1].strip())
            .replace("{question}", question)  # last: the question may contain the other fields
        )

    async def judge(self, question: str, steps: Sequence[str]) -> float:
        """The score of the last of ``steps``: one request."""
        got = await self.model.generate(self.prompt(question, steps), self.params, 1)
        score = self._read(got[0]) if got else None
        if score is None:
            self._note_unreadable(got[0].text if got else "")
            return 0.5
        return score

    def read(self, completion: Completion) -> float:
        """A verdict as a score: P(yes) from the first token's logprobs where they name a
        verdict, else 1.0 / 0.0 from the text, 0.5 when neither says."""
        score = self._read(completion)
        return 0.5 if score is None else score

    def _read(self, completion: Completion) -> float | None:
        if self.use_logprobs and completion.logprobs:
            p = self._probability(completion)
            if p is not None:
                return p
        return self._verdict(completion.text)

    def _note_unreadable(self, text: str) -> None:
        self.unreadable += 1
        run = current_run()
        count = self._unreadable_runs.pop(run, 0) + 1
        self._unreadable_runs[run] = count
        while len(self._unreadable_runs) > _RUNS_KEPT:
            self._unreadable_runs.popitem(last=False)
        if count == 1:  # once per run (once in all outside runs)
            logger.warning(
                "%r: could not read a verdict in %r; scoring the step 0.5 (a guess). Further "
                "guesses are counted in Result.unreadable_verdicts; a template asking for one "
                "word, or more max_tokens, usually helps",
                self,
                text[:80],
            )

    def pop_unreadable(self) -> int:
        """The current run's unreadable verdicts (scored 0.5), forgetting the count."""
        run = current_run()
        if run is None:
            return 0
        return self._unreadable_runs.pop(run, 0)

    def _probability(self, completion: Completion) -> float | None:
        assert completion.logprobs is not None
        first = completion.logprobs[0]
        alternatives = dict(first.top)
        alternatives.setdefault(first.token, first.logprob)
        p_yes = p_no = 0.0
        for token, logprob in alternatives.items():
            kind = self._kind(token)
            if kind == "no":
                p_no += math.exp(logprob)
            elif kind == "yes":
                p_yes += math.exp(logprob)
        if p_yes + p_no == 0.0:
            return None  # the first token is no verdict ("The", "**"): read the text
        if self.renormalize:
            return p_yes / (p_yes + p_no)
        return min(1.0, p_yes)

    def _kind(self, token: str) -> str | None:
        """``"yes"``/``"no"`` for a token that is (the start of) a verdict word. A token is
        often a word's beginning ("in" of "incorrect"); ``no`` is checked first."""
        t = token.strip().strip("*\"'`.").lower()
        if not t:
            return None
        for kind, words in (("no", self.no), ("yes", self.yes)):
            if any(w == t or (len(t) >= 2 and w.startswith(t)) for w in words):
                return kind
        return None

    def _verdict(self, text: str) -> float | None:
        words = [w.lower() for w in _WORD.findall(text)]
        for word in words[:3]:  # "**Correct**", "Verdict: incorrect"
            if word in self.no:
                return 0.0
            if word in self.yes:
                return 1.0
        # "The step is correct.": a verdict word later on, if only one kind occurs.
        kinds = {"no" if w in self.no else "yes" for w in words if w in self.no or w in self.yes}
        if len(kinds) == 1:
            return 0.0 if kinds == {"no"} else 1.0
        return None

    async def _score_steps(
        self, question: str, solutions: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """One request per step not scored yet (cached and repeated prefixes are not sent
        again), all of them concurrently."""
        wanted: dict[tuple[str, ...], float | None] = {}
        for steps in solutions:
            for i in range(len(steps)):
                prefix = tuple(steps[: i + 1])
                cached = self._cache.get((question, prefix)) if self.cache_size else None
                if prefix not in wanted or cached is not None:
                    wanted[prefix] = cached
        todo = [prefix for prefix, score in wanted.items() if score is None]
        scores: dict[tuple[str, ...], float] = {}
        failures: list[Exception] = []

        async def one(prefix: tuple[str, ...]) -> None:
            try:
                scores[prefix] = await self.judge(question, prefix)
            except (BudgetExceeded, GenerationError, ProviderError) as exc:
                failures.append(exc)  # raised below as itself, not in an exception group

        if len(todo) == 1:
            await one(todo[0])
        elif todo:
            async with anyio.create_task_group() as tg:
                for prefix in todo:
                    tg.start_soon(one, prefix)
        if failures:  # the budget first: the search stops "by the budget", not "by an error"
            error = next((f for f in failures if isinstance(f, BudgetExceeded)), failures[-1])
            error.paid_scores = scores  # type: ignore[attr-defined]  # kept by score_steps
            raise error
        known = {p: s for p, s in wanted.items() if s is not None} | scores
        return [[known[tuple(steps[: i + 1])] for i in range(len(steps))] for steps in solutions]
