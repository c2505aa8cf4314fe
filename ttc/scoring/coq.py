"""``CoqProof``: a candidate passes iff ``coqc`` accepts its proof of a fixed statement, using no
axiom but those allowed.

Two runs of ``coqc`` in one sandbox (the one ``UnitTests`` uses). The first compiles the
candidate's file, ``Candidate.v`` (the preamble, then the candidate's whole development, or the
statement followed by the candidate's proof). Only once it has ended is the second file written:
named with a fresh nonce, it elaborates the statement *before* loading the candidate (so nothing
the candidate defined can change what the statement means), checks with ``constr_eq`` that the
candidate's theorem has exactly that statement, type-checks it against the statement, and prints
``Print Assumptions``. The verdict is read from that second run's output alone, which the
candidate's file cannot write to: ``Admitted``, ``admit``, a new ``Axiom``/``Parameter``/
``Hypothesis``, ``Unset Guard Checking`` and the like all show up there, whatever the text says.
"""

from __future__ import annotations

import re
import secrets
import shutil
import sys
from collections.abc import Sequence
from typing import Literal

from ttc.errors import ConfigError
from ttc.scoring._checker import Checker, CheckReport, extract_block, trim
from ttc.scoring._sandbox import Step, StepResult
from ttc.types import Candidate

__all__ = ["CoqProof", "parse_assumptions"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_']*\Z")
_LANGUAGES = {"coq", "rocq", "v", "gallina"}
_DECLARES = (
    "Theorem|Lemma|Fact|Remark|Corollary|Proposition|Example|Definition|Fixpoint|"
    "CoFixpoint|Axiom|Axioms|Parameter|Parameters|Conjecture|Hypothesis|Variable|Let|"
    "Instance|Program"
)
_CLOSED = "Closed under the global context"
#: The module the candidate's file compiles to (``-Q . TTC``).
_MODULE = "TTC.Candidate"


def parse_assumptions(output: str) -> list[str] | None:
    """The assumptions ``Print Assumptions`` listed, one entry each (an axiom's ``name : type``,
    or a line such as ``f is assumed to be guarded.``); ``[]`` when the output says the term is
    closed; ``None`` when the output is neither."""
    text = output.strip()
    if text == _CLOSED:
        return []
    lines = text.splitlines()
    if not lines or lines[0].strip() != "Axioms:":
        return None
    entries: list[str] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0].isspace() and entries:  # a long type continues on indented lines
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    return entries


class CoqProof(Checker):
    """Correct iff ``coqc`` accepts the candidate's proof of ``statement`` with no axiom
    outside ``allowed_axioms``.

    Args:
        statement: the proposition, as Coq reads it after ``preamble``
            (``"forall n : nat, n + 0 = n"``), not a ``Theorem`` command.
        name: the theorem's name. A candidate that declares it (``Theorem name : ...``) is a
            whole file, auxiliary lemmas allowed; any other candidate is a proof, put after
            ``Theorem name : statement.`` (with ``Proof.`` if it does not start with one).
        preamble: what both files start with (``Require Import Arith Lia.``).
        allowed_axioms: axioms the proof may use, by name (``Classical_Prop.classic``; a
            name matches its qualified forms): by default none.
        coqc: the compiler (a name on ``PATH`` or a path).
        timeout: seconds for both runs of ``coqc`` together; a tactic that loops ends there.

    The rest are the sandbox's settings, as for ``UnitTests``. The candidate's script is its
    last ```coq block, else its last ``` block, else its text. Why a candidate failed (coqc's
    error, the axioms it used, a changed statement, a timeout) is in ``Candidate.failure`` and
    ``last_reports``.
    """

    who = "CoqProof"

    def __init__(
        self,
        statement: str,
        *,
        name: str = "theorem",
        preamble: str = "",
        allowed_axioms: Sequence[str] = (),
        coqc: str = "coqc",
        timeout: float = 30.0,
        memory_mb: int = 2048,
        max_processes: int = 16,
        max_output_bytes: int = 100_000,
        disk_mb: int = 100,
        isolation: Literal["auto", "bwrap", "process"] = "auto",
        python: str = sys.executable,
        concurrency: int = 2,
    ) -> None:
        super().__init__(
            timeout=timeout,
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_output_bytes=max_output_bytes,
            disk_mb=disk_mb,
            isolation=isolation,
            python=python,
            concurrency=concurrency,
        )
        if not isinstance(statement, str) or not statement.strip():
            raise ConfigError(f"statement must be a non-empty Coq proposition, got {statement!r}")
        if re.match(rf"\s*(?:{_DECLARES})\b", statement):
            raise ConfigError(
                "statement must be the proposition alone (e.g. 'forall n : nat, n + 0 = n'), "
                f"not a command: {statement[:60]!r}"
            )
        if not isinstance(name, str) or not _IDENT.match(name):
            raise ConfigError(f"name must be a Coq identifier, got {name!r}")
        if not isinstance(preamble, str):
            raise ConfigError(f"preamble must be a string, got {type(preamble).__name__}")
        if isinstance(allowed_axioms, str) or not all(
            isinstance(a, str) and a for a in allowed_axioms
        ):
            raise ConfigError(f"allowed_axioms must be a list of names, got {allowed_axioms!r}")
        found = shutil.which(coqc)
        if found is None:
            raise ConfigError(
                f"coqc: {coqc!r} not found; install Coq (Debian: apt-get install coq) or pass "
                "coqc= the compiler's path"
            )
        self.statement = statement.strip().removesuffix(".").rstrip()
        self.name = name
        self.preamble = preamble
        self.allowed_axioms = tuple(allowed_axioms)
        self.coqc = found

    def __repr__(self) -> str:
        return f"CoqProof({self.statement[:40]!r}, name={self.name!r})"

    def _read_only(self) -> tuple[str, ...]:
        # Coq finds its plugins (lia's, ltac's) through findlib, configured in /etc.
        return ("/etc/ocamlfind.conf", "/etc/ocamlfind.conf.d", "/etc/findlib.conf")

    def _work(self, candidate: Candidate) -> str:
        return extract_block(candidate.text, _LANGUAGES)

    def source(self, script: str) -> str:
        """The candidate's file, ``Candidate.v``, for ``script`` (a whole file or a proof)."""
        if re.search(rf"\b(?:{_DECLARES})\s+{re.escape(self.name)}(?![\w'])", script):
            body = script
        else:
            proof = script.strip()
            if not re.match(r"Proof\b", proof):
                proof = "Proof.\n" + proof
            body = f"Theorem {self.name} : {self.statement}.\n{proof}"
        return f"{self.preamble}\n{body}\n"

    def check_file(self, nonce: str) -> str:
        """The second run's file: the statement elaborated before the candidate is loaded,
        the exact-statement check, the type check and ``Print Assumptions``."""
        stmt, check = f"ttc_statement_{nonce}", f"ttc_check_{nonce}"
        theorem = f"{_MODULE}.{self.name}"
        return (
            'Set Warnings "-all".\n'
            f"{self.preamble}\n"
            f"Definition {stmt} := ({self.statement}).\n"
            "From TTC Require Candidate.\n"
            "Goal True.\n"
            f"  let t := type of {theorem} in\n"
            f"  let s := eval unfold {stmt} in {stmt} in\n"
            f'  tryif constr_eq t s then exact I else fail "ttc-statement-differs".\n'
            "Qed.\n"
            f"Definition {check} : {stmt} := {theorem}.\n"
            f"Print Assumptions {check}.\n"
        )

    def _allowed(self, entry: str) -> bool:
        name = entry.split(" : ", 1)[0].strip()
        if " " in name or name.startswith("Candidate."):
            return False
        return any(a == name or a.endswith("." + name) for a in self.allowed_axioms)

    async def _check(self, work: str) -> CheckReport:
        nonce = secrets.token_hex(8)
        argv = (self.coqc, "-q", "-Q", ".", "TTC")
        steps = [
            Step((*argv, "Candidate.v"), {"Candidate.v": self.source(work)}),
            Step((*argv, f"Check_{nonce}.v"), {f"Check_{nonce}.v": self.check_file(nonce)}),
        ]
        talk, outcome, chosen = await self._run_steps(steps)
        results = talk.results
        output = "\n".join(r.output for r in results)

        def report(reason: str) -> CheckReport:
            return CheckReport(
                passed=not reason,
                reason=trim(reason),
                output=output,
                seconds=outcome.seconds,
                timed_out=outcome.timed_out,
                isolation=chosen.kind,
                network_isolated=talk.network,
            )

        if outcome.timed_out:
            return report(f"timed out after {self.timeout:g} s")
        if outcome.disk_full:
            return report(f"wrote more than disk_mb={self.disk_mb} MB")
        if talk.broken:
            return report(talk.broken)
        if not results:
            return report(f"the sandbox ended before coqc ran: {outcome.stderr.strip()}")
        if results[0].status != 0:
            return report(_coqc_failure(results[0], "coqc rejected the proof"))
        if len(results) < 2:
            return report(f"the sandbox ended before the check ran: {outcome.stderr.strip()}")
        final = results[1]
        if final.status != 0:
            if "ttc-statement-differs" in final.output:
                return report(f"the theorem {self.name} does not have the statement asked")
            if re.search(rf"The reference {_MODULE}\.{re.escape(self.name)}\b", final.output):
                return report(f"the script does not define {self.name}")
            return report(_coqc_failure(final, "the check of the proof failed"))
        # The whole output must be Print Assumptions' (a preamble that prints fails closed).
        assumptions = parse_assumptions(final.output)
        if assumptions is None:
            return report(f"unexpected output from Print Assumptions: {final.output[:200]}")
        bad = [a for a in assumptions if not self._allowed(a)]
        if not bad:
            return report("")
        if any(a.startswith(f"Candidate.{self.name} :") for a in bad):
            return report(f"the proof of {self.name} is not finished (Admitted): " + "; ".join(bad))
        return report("the proof relies on assumptions: " + "; ".join(bad))


def _coqc_failure(result: StepResult, what: str) -> str:
    output, status = result.output, result.status
    lines = output.strip().splitlines()
    # coqc's error: 'File "./Candidate.v", line 3, characters 2-9:' then 'Error: ...'.
    start = next((i for i, line in enumerate(lines) if line.startswith("Error")), None)
    if start is not None:
        where = lines[start - 1] if start and lines[start - 1].startswith("File ") else ""
        message = "\n".join(lines[start:])
        return f"{what}: {where} {message}".replace("  ", " ")
    if status < 0:
        return f"{what}: coqc was killed by signal {-status} (a resource limit?)"
    return f"{what}: coqc exited with status {status}: {output.strip()[-300:]}"
