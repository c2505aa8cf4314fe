"""``SMTCheck``: a candidate's answer (a number, an assignment, a formula, or "no solution") is
checked against an SMT-LIB problem by z3 or cvc5, in the sandbox ``UnitTests`` uses.

The problem is the ground truth: its declarations and assertions say what a right answer is,
so no reference answer is needed. The candidate's answer never reaches the solver as commands:
numbers and truth values are parsed here and written back in SMT-LIB by ttc, and a formula must
be exactly one balanced SMT-LIB term, so nothing in it can close an ``assert`` and add commands
of its own. All of a call's checks go to one solver process (``pip install 'ttc[smt]'``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ttc.errors import ConfigError
from ttc.scoring._checker import Checker, CheckReport, extract_block, trim
from ttc.scoring._sandbox import Step
from ttc.scoring.extract import extract_answer
from ttc.scoring.verifiers import _fraction
from ttc.types import Candidate

__all__ = ["SMTCheck", "sexprs"]

_WORKER_SOURCE = Path(__file__).with_name("_smt_worker.py").read_text(encoding="utf-8")
_TOKEN = re.compile(
    r"""\s+|;[^\n]*|(?P<open>\()|(?P<close>\))|(?P<atom>\|[^|]*\||"(?:[^"]|"")*"|[^\s()|";]+)"""
)
#: Top-level commands a problem may hold; ``check-sat``, ``get-*`` and ``exit`` are dropped.
_KEPT = {
    "set-logic", "set-option", "set-info", "declare-const", "declare-fun", "define-fun",
    "define-fun-rec", "define-funs-rec", "declare-sort", "define-sort", "declare-datatype",
    "declare-datatypes", "assert",
}  # fmt: skip
_DROPPED = {"check-sat", "get-model", "get-value", "get-proof", "get-unsat-core", "exit"}
_UNSAT_WORDS = re.compile(
    r"\b(?:unsat(?:isfiable)?|no solutions?|has no solution|no such \w+|there (?:is|are) no)\b",
    re.IGNORECASE,
)
_VALUE = (
    r"\(\s*-\s*[0-9.]+\s*\)|\(\s*/\s*[-0-9.()\s]+\)|-?\d+(?:\.\d+)?(?:/\d+)?"
    r"|true|false|#x[0-9a-fA-F]+|#b[01]+"
)
_LANGUAGES = {"smt", "smt2", "smtlib", "smt-lib", "lisp", "scheme"}


def sexprs(text: str) -> list[str | list[object]]:
    """``text`` read as SMT-LIB s-expressions (nested lists of atoms); ``ValueError`` if the
    parentheses do not balance or a string or quoted symbol never ends."""
    stack: list[list[object]] = [[]]
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"cannot read SMT-LIB at character {pos}: {text[pos : pos + 20]!r}")
        pos = match.end()
        if match.group("open"):
            stack.append([])
        elif match.group("close"):
            if len(stack) == 1:
                raise ValueError(f"an unmatched ')' at character {pos - 1}")
            done = stack.pop()
            stack[-1].append(done)
        elif match.group("atom"):
            stack[-1].append(match.group("atom"))
    if len(stack) != 1:
        raise ValueError("a '(' is never closed")
    return stack[0]  # type: ignore[return-value]


def _claims_unsat(text: str) -> bool:
    """Whether an answer says there is no solution: its last line says so and gives no number
    after saying it."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    found = _UNSAT_WORDS.search(lines[-1])
    return found is not None and not re.search(r"\d", lines[-1][found.end() :])


def _render(node: object) -> str:
    if isinstance(node, list):
        return "(" + " ".join(_render(n) for n in node) + ")"
    return str(node)


@dataclass(frozen=True)
class _Query:
    text: str
    values: tuple[str, ...] = ()


class SMTCheck(Checker):
    """Correct iff the candidate's answer is right by the SMT-LIB ``problem``'s constraints.

    Args:
        problem: SMT-LIB declarations and assertions (a ``(check-sat)``, ``(get-model)`` or
            ``(exit)`` in it is dropped).
        symbol: with ``answer="number"``, the declared constant the question asks for.
        answer: what a candidate gives (default: ``"number"`` with a ``symbol``, else
            ``"assignment"``):

            - ``"number"``: a value of ``symbol`` (``candidate.answer``, else the last number
              in its text). Right iff the constraints hold with it and, with ``unique``, no
              other value satisfies them (the answer is forced, not merely possible).
            - ``"assignment"``: a value for every declared constant (``x = 3, y = -1``, or
              ``(define-fun x () Int 3)``). Right iff the constraints hold with them.
            - ``"formula"``: an SMT-LIB term over the declared symbols (the last ```smt2
              block, else the answer, else the text). With ``gold`` (a term): right iff it
              is equivalent to ``gold`` under the constraints; without: iff the constraints
              entail it.

            In ``number`` and ``assignment`` modes an answer "no solution" (or "unsat") is
            right iff the constraints are unsatisfiable.
        solver: ``"z3"`` or ``"cvc5"`` (both on PyPI, ``pip install 'ttc[smt]'``).
        proofs: every verdict that rests on an ``unsat`` also needs the solver's proof of it;
            cvc5 checks that proof itself (``check-proofs``), z3 only produces it.
        timeout: seconds per solver query; the process gets that per query plus 10 s.

    The rest are the sandbox's settings, as for ``UnitTests``; the solver runs in ``python``,
    which must have z3 or cvc5 installed (as root without bubblewrap it must also be readable
    by every user, as for ``UnitTests``). Why a candidate failed (the
    constraint it breaks, another value that also fits, the solver's error) is in
    ``Candidate.failure`` and ``last_reports``.
    """

    who = "SMTCheck"

    def __init__(
        self,
        problem: str,
        *,
        symbol: str | None = None,
        answer: Literal["number", "assignment", "formula"] | None = None,
        gold: str | None = None,
        unique: bool = True,
        solver: Literal["z3", "cvc5"] = "z3",
        proofs: bool = False,
        timeout: float = 10.0,
        memory_mb: int = 2048,
        max_processes: int = 16,
        max_output_bytes: int = 1_000_000,
        disk_mb: int = 50,
        isolation: Literal["auto", "bwrap", "process"] = "auto",
        python: str = sys.executable,
    ) -> None:
        super().__init__(
            timeout=timeout,
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_output_bytes=max_output_bytes,
            disk_mb=disk_mb,
            isolation=isolation,
            python=python,
            concurrency=1,
        )
        if not isinstance(problem, str) or not problem.strip():
            raise ConfigError("problem must be non-empty SMT-LIB text")
        try:
            commands = sexprs(problem)
        except ValueError as exc:
            raise ConfigError(f"problem is not SMT-LIB: {exc}") from None
        kept: list[str] = []
        self.constants: dict[str, str] = {}  # declared constants and their sorts
        for command in commands:
            head = command[0] if isinstance(command, list) and command else None
            if head in _DROPPED:
                continue
            if head not in _KEPT:
                raise ConfigError(f"problem: unsupported command {_render(command)[:60]!r}")
            assert isinstance(command, list)
            if head == "declare-const" and len(command) == 3:
                self.constants[str(command[1])] = _render(command[2])
            elif head == "declare-fun" and len(command) == 4 and command[2] == []:
                self.constants[str(command[1])] = _render(command[3])
            kept.append(_render(command))
        if answer is None:
            answer = "number" if symbol is not None else "assignment"
        if answer not in ("number", "assignment", "formula"):
            raise ConfigError(f"answer must be 'number', 'assignment' or 'formula', got {answer!r}")
        if answer == "number":
            if symbol is None:
                raise ConfigError("symbol: answer='number' needs the constant asked for")
            if symbol not in self.constants:
                declared = ", ".join(self.constants) or "none"
                raise ConfigError(f"symbol {symbol!r} is not a declared constant ({declared})")
        if gold is not None:
            if answer != "formula":
                raise ConfigError("gold is a reference formula: only for answer='formula'")
            self._term(gold, "gold")
        if solver not in ("z3", "cvc5"):
            raise ConfigError(f"solver must be 'z3' or 'cvc5', got {solver!r}")
        if not self.constants and answer != "formula":
            raise ConfigError("problem declares no constant for an answer to give a value to")
        self.problem = problem
        self.symbol = symbol
        self.answer = answer
        self.gold = gold
        self.unique = unique
        self.solver = solver
        self.proofs = proofs
        self._preamble = "\n".join(kept)

    def __repr__(self) -> str:
        return f"SMTCheck(answer={self.answer!r}, symbol={self.symbol!r}, solver={self.solver!r})"

    @staticmethod
    def _term(text: str, field: str) -> str:
        """``text`` as exactly one SMT-LIB term, else ``ConfigError`` (``ValueError`` for a
        candidate's)."""
        try:
            nodes = sexprs(text)
        except ValueError as exc:
            raise ConfigError(f"{field} is not an SMT-LIB term: {exc}") from None
        if len(nodes) != 1:
            raise ConfigError(f"{field} must be one SMT-LIB term, got {len(nodes)}")
        return _render(nodes[0])

    # ---- what a candidate says, as SMT-LIB ---------------------------------------------------

    def _work(self, candidate: Candidate) -> str:
        if self.answer == "formula":
            blocks = extract_block(candidate.text, _LANGUAGES)
            if blocks != candidate.text or candidate.answer is None:
                return blocks.strip()
            return candidate.answer.strip()
        text = candidate.answer if candidate.answer is not None else candidate.text
        if _claims_unsat(text):
            return "unsat"
        if self.answer == "number":
            found = candidate.answer if candidate.answer is not None else extract_answer(text)
            return (found or "").strip()
        if candidate.answer is not None and not self._assignment(candidate.answer):
            # An extracted answer is one number, not an assignment: read the whole text.
            return "unsat" if _claims_unsat(candidate.text) else candidate.text
        return text

    def _literal(self, value: str, sort: str) -> str:
        """A value the candidate gave, written in SMT-LIB for ``sort``; ValueError if it is
        not one."""
        text = value.strip()
        if sort == "Bool":
            if text.lower() in ("true", "false"):
                return text.lower()
            raise ValueError(f"{value!r} is not true or false")
        if sort.startswith("(_ BitVec"):
            width = int(sort.split()[2].rstrip(")"))
            if re.fullmatch(r"#x[0-9a-fA-F]+|#b[01]+", text):
                return text
            number = _fraction(text)
            if number is None or number.denominator != 1:
                raise ValueError(f"{value!r} is not a bit-vector value")
            return f"(_ bv{int(number) % (1 << width)} {width})"
        if re.fullmatch(r"\(\s*-\s*[0-9.]+\s*\)", text):
            text = "-" + text.strip("()").strip()[1:].strip()
        fraction_form = re.fullmatch(r"\(\s*/\s*(\S+)\s+(\S+)\s*\)", text)
        if fraction_form:
            text = f"{fraction_form.group(1)}/{fraction_form.group(2)}"
        number = _fraction(text)
        if number is None:
            raise ValueError(f"{value!r} is not a number")
        if sort == "Int":
            if number.denominator != 1:
                raise ValueError(f"{value!r} is not an integer")
            return str(int(number)) if number >= 0 else f"(- {-int(number)})"
        if sort == "Real":
            num = f"{abs(number.numerator)}.0"
            body = num if number.denominator == 1 else f"(/ {num} {number.denominator}.0)"
            return body if number >= 0 else f"(- {body})"
        raise ValueError(f"answers of sort {sort} are not supported")

    def _assignment(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in self.constants:
            key = re.escape(name)
            patterns = (
                rf"\(\s*define-fun\s+{key}\s+\(\s*\)\s+\S+\s+({_VALUE})\s*\)",
                rf"\(\s*{key}\s+({_VALUE})\s*\)",
                rf"(?<![\w|.]){key}\s*:?=\s*({_VALUE})",
            )
            for pattern in patterns:
                # "a + b = 30" says nothing about b: skip a name inside an expression.
                matches = [
                    m.group(1)
                    for m in re.finditer(pattern, text)
                    if not text[: m.start()].rstrip().endswith(("+", "-", "*", "/", "^"))
                ]
                if matches:
                    found[name] = matches[-1]
                    break
        return found

    def _queries(self, work: str) -> tuple[list[_Query], str]:
        """The solver queries that decide ``work`` and, if none can, why it is wrong."""
        base = self._preamble + "\n"
        if self.answer == "formula":
            try:
                term = self._term(work, "the formula")
            except ConfigError as exc:
                return [], str(exc)
            goal = f"(= {term} {self.gold})" if self.gold is not None else term
            return [_Query(f"{base}(assert (not {goal}))\n(check-sat)\n")], ""
        if work == "unsat":
            return [_Query(f"{base}(check-sat)\n")], ""
        if self.answer == "number":
            assert self.symbol is not None
            if not work:
                return [], "no answer"
            try:
                value = self._literal(work, self.constants[self.symbol])
            except ValueError as exc:
                return [], str(exc)
            queries = [_Query(f"{base}(assert (= {self.symbol} {value}))\n(check-sat)\n")]
            if self.unique:
                queries.append(
                    _Query(
                        f"{base}(assert (not (= {self.symbol} {value})))\n(check-sat)\n",
                        (self.symbol,),
                    )
                )
            return queries, ""
        given = self._assignment(work)
        missing = [name for name in self.constants if name not in given]
        if missing:
            return [], "no value for " + ", ".join(missing)
        try:
            equalities = [
                f"(= {name} {self._literal(given[name], sort)})"
                for name, sort in self.constants.items()
            ]
        except ValueError as exc:
            return [], str(exc)
        return [_Query(f"{base}(assert (and true {' '.join(equalities)}))\n(check-sat)\n")], ""

    # ---- the verdict -------------------------------------------------------------------------

    def _decide(self, work: str, results: list[dict[str, str]]) -> str:
        """Why ``work`` is wrong given its queries' results (empty: it is right)."""
        status = [r.get("status", "error") for r in results]
        for result in results:
            if result.get("status") in ("error", "unknown"):
                what = "gave up (unknown: a timeout or an undecidable case)"
                if result.get("status") == "error":
                    what = f"failed: {result.get('error', '')}"
                return f"the solver {what}"
        if self.answer == "formula":
            if status[0] == "unsat":
                return ""
            if self.gold is not None:
                return "the formula is not equivalent to the reference under the constraints"
            return "the constraints do not entail the formula"
        if work == "unsat":
            return "" if status[0] == "unsat" else "the constraints are satisfiable"
        if status[0] != "sat":
            return f"{self._shown(work)} violates the constraints"
        if len(results) > 1 and status[1] == "sat":
            other = " ".join(results[1].get("values", "").split())
            return f"{self._shown(work)} is not the only solution: {other} also satisfies them"
        return ""

    def _shown(self, work: str) -> str:
        if self.answer == "number":
            return f"{self.symbol} = {work}"
        return "the assignment"

    async def _check(self, work: str) -> CheckReport:
        return (await self._check_batch([work]))[0]

    async def _check_batch(self, works: Sequence[str]) -> list[CheckReport]:
        plans = [self._queries(w) for w in works]
        queries = [q for plan, _ in plans for q in plan]
        reports: list[CheckReport] = []
        if not queries:
            return [CheckReport(False, trim(why)) for _, why in plans]
        job = {
            "solver": self.solver,
            "timeout_ms": max(1, int(self.timeout * 1000)),
            "proofs": self.proofs,
            "queries": [{"text": q.text, "values": list(q.values)} for q in queries],
        }
        step = Step((self.python, "-s", "-B", "-c", _WORKER_SOURCE), {"job.json": json.dumps(job)})
        seconds = self.timeout * len(queries) + 10.0
        talk, outcome, chosen = await self._run_steps([step], seconds=seconds)
        output = talk.results[0].output if talk.results else ""
        marker = output.rfind("ttc-smt-results ")
        results: list[dict[str, str]] = []
        if marker >= 0:
            try:
                results = json.loads(output[marker + len("ttc-smt-results ") :].split("\n")[0])
            except ValueError:
                results = []
        failure = ""
        if outcome.timed_out:
            failure = f"timed out after {seconds:g} s"
        elif talk.broken:
            failure = talk.broken
        elif len(results) != len(queries):
            failure = "the solver process failed: " + trim(output or outcome.stderr, 300)
        at = 0
        for work, (plan, why) in zip(works, plans, strict=True):
            mine = results[at : at + len(plan)]
            at += len(plan)
            if why:
                reason = why
            elif failure:
                reason = failure
            else:
                reason = self._decide(work, mine)
            proof = "\n".join(r.get("proof", "") for r in mine if r.get("proof"))
            reports.append(
                CheckReport(
                    passed=not reason,
                    reason=trim(reason),
                    output=proof or "\n".join(r.get("output", "") for r in mine),
                    seconds=outcome.seconds,
                    timed_out=outcome.timed_out,
                    isolation=chosen.kind,
                    network_isolated=talk.network,
                )
            )
        return reports
