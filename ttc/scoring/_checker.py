"""What the proof and SMT checkers share: the report, the verdict cache, the batching of a call's
candidates (identical scripts are checked once), and the failure reason put on each candidate.

Each checker says what to check in a candidate (``_work``) and how one check goes (``_check``),
which runs programs in ``UnitTests``' sandbox through ``SandboxedVerifier._run_steps``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ttc.scoring._sandbox import SandboxedVerifier
from ttc.scoring._workers import run_all
from ttc.types import Candidate, Prompt

#: Characters of a checker's message kept on a candidate and in a report's ``reason``.
REASON_CHARS = 500
#: Verdicts remembered per checker instance (by the exact script checked).
_CACHE_SIZE = 1_000

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_block(text: str, languages: Collection[str]) -> str:
    """The last fenced block tagged with one of ``languages``, else the last fenced block,
    else the whole text."""
    blocks = _FENCE.findall(text)
    tagged = [code for tag, code in blocks if tag.lower() in languages]
    if tagged:
        return str(tagged[-1])
    if blocks:
        return str(blocks[-1][1])
    return text


def trim(message: str, limit: int = REASON_CHARS) -> str:
    """``message`` on at most ``limit`` characters, blank lines dropped, the start kept (where
    checkers put the error)."""
    text = "\n".join(line.rstrip() for line in message.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@dataclass(frozen=True)
class CheckReport:
    """How one candidate's check went.

    ``reason`` is why it failed (the checker's message, trimmed; empty when it passed), also
    set on the candidate as ``Candidate.failure``; ``output`` is the checker's own output (its
    last ``max_output_bytes``); ``isolation`` is ``"bwrap"`` or ``"process"``;
    ``network_isolated``: the checker ran without network; ``cached``: the same script was
    checked before by this verifier.
    """

    passed: bool
    reason: str
    output: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    isolation: str = ""
    cached: bool = False
    network_isolated: bool = False


class Checker(SandboxedVerifier):
    """A verifier that checks each candidate's script with an external checker in the sandbox.

    ``last_reports`` holds one ``CheckReport`` per candidate of the latest call, in order.
    """

    def __init__(self, **sandbox: object) -> None:
        super().__init__(**sandbox)  # type: ignore[arg-type]
        self.last_reports: list[CheckReport] = []
        self._cache: OrderedDict[str, CheckReport] = OrderedDict()

    def _work(self, candidate: Candidate) -> str:
        """What to check in ``candidate`` (its script, or its answer)."""
        raise NotImplementedError

    async def _check(self, work: str) -> CheckReport:
        """Check one script."""
        raise NotImplementedError

    async def _check_batch(self, works: Sequence[str]) -> list[CheckReport]:
        """Check distinct scripts: each in its own sandbox, ``concurrency`` at a time (a
        checker whose work is data, not code, runs them all in one)."""
        reports: list[CheckReport | None] = [None] * len(works)

        async def one(i: int, work: str) -> None:
            reports[i] = await self._check(work)

        await run_all([functools.partial(one, i, w) for i, w in enumerate(works)])
        return [r if r is not None else CheckReport(False, "not checked") for r in reports]

    async def check(self, text: str) -> CheckReport:
        """Check one candidate's text (as ``verify`` would) and report how it went."""
        return (await self._check_all([self._work(Candidate(text=text))]))[0]

    async def _check_all(self, works: Sequence[str]) -> list[CheckReport]:
        """One report per work, from the cache or from one batch of the new ones."""
        known: dict[str, CheckReport] = {}
        for work in dict.fromkeys(works):
            report = self._cache.get(work)
            if report is not None:
                self._cache.move_to_end(work)
                known[work] = dataclasses.replace(report, seconds=0.0, cached=True)
        new = [w for w in dict.fromkeys(works) if w not in known]
        if new:
            for work, report in zip(new, await self._check_batch(new), strict=True):
                known[work] = report
                self._cache[work] = report
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return [known[w] for w in works]

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        self.last_reports = await self._check_all([self._work(c) for c in candidates])
        for candidate, report in zip(candidates, self.last_reports, strict=True):
            candidate.failure = report.reason or None
        return [r.passed for r in self.last_reports]
