"""``LeanProof``: a candidate passes iff Lean 4 accepts its proof of a fixed statement, using no
axiom but those allowed (``sorry`` shows up as ``sorryAx``, ``native_decide`` as
``Lean.ofReduceBool``).

The same contract as ``CoqProof``, through a Lean toolchain you installed (elan; a Lake project
for Mathlib). Two runs of ``lean --json`` in one sandbox (the one ``UnitTests`` uses): the first
compiles the candidate's file to ``Candidate.olean``; only once it has ended is the second file
written, named with a fresh nonce: it imports the candidate, restates the theorem against the
statement (``theorem ttc_check_<nonce> : <statement> := @name``), checks that the candidate's
theorem has exactly that statement (``guard_expr ... =ₐ ...``: equal up to bound names) and
asks ``#print axioms``. The verdict is read from the messages of that second run at the lines
ttc wrote, never from the candidate's own output.

Lean lets a file extend the language (``macro``, ``syntax``, ``elab``, ``initialize``...), and
an imported module's extensions are active in the file that imports it; so a candidate may not
use those commands at all (``policy="strict"``, the default): see docs/verifiers.md for what
this does and does not rule out.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio.to_thread

from ttc.errors import ConfigError, TTCError
from ttc.scoring._checker import Checker, CheckReport, extract_block, trim
from ttc.scoring._sandbox import Step, StepResult
from ttc.types import Candidate

__all__ = ["LeanMessage", "LeanProof", "parse_axioms", "parse_messages"]

_LANGUAGES = {"lean", "lean4"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_'!?]*(?:\.[A-Za-z_][A-Za-z0-9_'!?]*)*\Z")
_DECLARES = r"(?:theorem|lemma|def|abbrev|example|instance|axiom|opaque)"
#: Lean's three standard axioms (``Init.Core``, ``Init.Classical``).
STANDARD_AXIOMS = ("propext", "Classical.choice", "Quot.sound")
#: What ``native_decide`` and ``decide +kernel``-free compiled evaluation add.
_NATIVE_AXIOMS = ("Lean.ofReduceBool", "Lean.ofReduceNat", "Lean.trustCompiler")
#: Commands a strict policy refuses in a candidate: they change how later files parse and
#: elaborate (the check file imports the candidate), run code at import time, or switch off
#: the kernel's checks.
_FORBIDDEN = re.compile(
    r"(?<![\w.])(?:#eval|#exit|run_cmd|run_elab|run_meta|unsafe|implemented_by|extern|"
    r"initialize|builtin_initialize|macro_rules|elab_rules|declare_syntax_cat|"
    r"debug\.[\w.]+)(?![\w'])"
    r"|(?m:^[ \t]*(?:@\[[^\]]*\][ \t]*)?(?:(?:local|scoped|private|protected)[ \t]+)*"
    r"(?:macro|syntax|elab|notation|infix|infixl|infixr|prefix|postfix|import)(?![\w']))"
)
_AXIOMS = re.compile(r"'(?P<name>[^']+)' depends on axioms: \[(?P<axioms>[^\]]*)\]\s*\Z")
_NO_AXIOMS = re.compile(r"'(?P<name>[^']+)' does not depend on any axioms\s*\Z")


@dataclass(frozen=True)
class LeanMessage:
    """One message of ``lean --json`` (Lean's ``SerialMessage``): severity ``"information"``,
    ``"warning"`` or ``"error"``, the 1-based line and 0-based column, and the text."""

    severity: str
    line: int
    column: int
    text: str
    file: str = ""

    def __str__(self) -> str:
        # The command line's own format (Lean's ``SerialMessage.toString``).
        if self.severity == "information":
            return self.text
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.text}"


def parse_messages(output: str) -> tuple[list[LeanMessage], list[str]]:
    """The messages in ``lean --json``'s output (one JSON object a line), and the lines that
    are not messages (what Lean or the system printed otherwise: a crash, a missing import)."""
    messages: list[LeanMessage] = []
    other: list[str] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        pos = record.get("pos") if isinstance(record, dict) else None
        if not isinstance(pos, dict) or "severity" not in record:
            other.append(line)
            continue
        data = record.get("data", "")
        caption = record.get("caption") or ""
        text = f"{caption}:\n{data}" if caption else str(data)
        messages.append(
            LeanMessage(
                str(record["severity"]),
                int(pos.get("line", 0)),
                int(pos.get("column", 0)),
                text,
                str(record.get("fileName", "")),
            )
        )
    return messages, other


def parse_axioms(text: str) -> tuple[str, list[str]] | None:
    """``#print axioms``'s message as (declaration, axioms): ``'t' depends on axioms:
    [propext, sorryAx]`` or ``'t' does not depend on any axioms``; ``None`` if it is neither."""
    text = text.strip()
    found = _AXIOMS.match(text)
    if found:
        names = [a.strip() for a in found.group("axioms").split(",") if a.strip()]
        return found.group("name"), names
    none = _NO_AXIOMS.match(text)
    if none:
        return none.group("name"), []
    return None


class LeanProof(Checker):
    """Correct iff Lean 4 accepts the candidate's proof of ``statement`` with no axiom outside
    ``allowed_axioms``.

    Args:
        statement: the proposition, as Lean reads it after ``header``
            (``"∀ n : ℕ, n + 0 = n"``), not a ``theorem`` command.
        name: the theorem's name. A candidate that declares it (``theorem name ...``) is a
            whole file; any other is a proof, put after ``theorem name : statement :=``
            (with ``by`` unless it starts with ``by`` or ``:=``).
        header: the imports and ``open``s both files start with (``import Mathlib``).
        allowed_axioms: by default Lean's three standard ones (``propext``,
            ``Classical.choice``, ``Quot.sound``); ``sorryAx`` is never allowed.
        native_decide: whether proofs may trust the compiler (``native_decide``, which adds
            ``Lean.ofReduceBool``): off by default.
        policy: ``"strict"`` (default) refuses candidates that use commands which extend
            Lean or run code (``macro``, ``syntax``, ``elab``, ``notation``, ``initialize``,
            ``#eval``, ``unsafe``, ``implemented_by``, ``set_option debug...``);
            ``"trusting"`` allows them (the axiom check still runs).
        lean: the ``lean`` executable, or ``lake`` when ``project`` is given.
        project: a Lake project (one with Mathlib built, say): its ``LEAN_PATH`` and
            toolchain are read once with ``lake env`` and bound read-only in the sandbox.
        timeout: seconds for both runs together (Mathlib's import alone takes seconds).

    The rest are the sandbox's settings, as for ``UnitTests``. ``memory_mb`` limits address
    space, and Lean maps every imported ``.olean`` into it (Mathlib's take several GB): 32 GB
    by default. The candidate's script is its last ```lean block, else its last
    ``` block, else its text. Why a candidate failed is in ``Candidate.failure`` and
    ``last_reports``.
    """

    who = "LeanProof"

    def __init__(
        self,
        statement: str,
        *,
        name: str = "theorem",
        header: str = "",
        allowed_axioms: Sequence[str] = STANDARD_AXIOMS,
        native_decide: bool = False,
        policy: Literal["strict", "trusting"] = "strict",
        lean: str = "lean",
        project: str | None = None,
        timeout: float = 120.0,
        memory_mb: int = 32768,
        max_processes: int = 64,
        max_output_bytes: int = 1_000_000,
        disk_mb: int = 200,
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
            raise ConfigError(f"statement must be a non-empty Lean proposition, got {statement!r}")
        if re.match(rf"\s*{_DECLARES}\b", statement):
            raise ConfigError(
                "statement must be the proposition alone (e.g. '∀ n : ℕ, n + 0 = n'), not a "
                f"command: {statement[:60]!r}"
            )
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"name must be a Lean identifier, got {name!r}")
        if isinstance(allowed_axioms, str) or not all(
            isinstance(a, str) and a for a in allowed_axioms
        ):
            raise ConfigError(f"allowed_axioms must be a list of names, got {allowed_axioms!r}")
        if "sorryAx" in allowed_axioms:
            raise ConfigError("allowed_axioms: sorryAx is sorry; it cannot be allowed")
        if policy not in ("strict", "trusting"):
            raise ConfigError(f"policy must be 'strict' or 'trusting', got {policy!r}")
        if project is not None and not os.path.isdir(project):
            raise ConfigError(f"project: {project!r} is not a directory (a Lake project)")
        self.statement = statement.strip()
        self.name = name
        self.header = header
        self.allowed_axioms = tuple(allowed_axioms)
        self.native_decide = native_decide
        self.policy = policy
        self.lean = lean
        self.project = project
        self._toolchain: tuple[str, tuple[str, ...], tuple[str, ...]] | None = None
        self._toolchain_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LeanProof({self.statement[:40]!r}, name={self.name!r})"

    # ---- the toolchain -----------------------------------------------------------------------

    def toolchain(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """``(lean binary, LEAN_PATH entries, read-only directories)``, found once: the
        toolchain's own binary (elan's ``lean`` shim would pick a toolchain by the sandbox's
        directory), the project's ``LEAN_PATH``, and what the sandbox must see of both."""
        with self._toolchain_lock:
            if self._toolchain is None:
                self._toolchain = self._find_toolchain()
            return self._toolchain

    def _find_toolchain(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        def ask(argv: list[str]) -> str:
            try:
                done = subprocess.run(
                    argv, cwd=self.project, capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise TTCError(f"LeanProof: cannot run {' '.join(argv)}: {exc}") from None
            if done.returncode != 0:
                raise TTCError(
                    f"LeanProof: {' '.join(argv)} failed ({done.returncode}): "
                    f"{trim(done.stderr or done.stdout, 300)}"
                )
            return done.stdout.strip()

        tool = shutil.which(self.lean)
        if tool is None:
            raise ConfigError(
                f"lean: {self.lean!r} not found; install Lean 4 (elan) or pass lean= its path"
            )
        lean_path: tuple[str, ...] = ()
        if self.project is not None:
            lake = tool if os.path.basename(tool) == "lake" else shutil.which("lake") or "lake"
            prefix = ask([lake, "env", "lean", "--print-prefix"])
            entries = ask([lake, "env", "printenv", "LEAN_PATH"])
            lean_path = tuple(p for p in entries.split(os.pathsep) if p)
        else:
            prefix = ask([tool, "--print-prefix"])
        binary = os.path.join(prefix, "bin", "lean")
        return binary, lean_path, (prefix, *lean_path)

    def _read_only(self) -> tuple[str, ...]:
        return self.toolchain()[2]

    def _env(self, home: str) -> dict[str, str]:
        env = super()._env(home)
        if self._toolchain is not None:  # the probe of the sandbox runs before any check
            env["LEAN_PATH"] = os.pathsep.join([*self._toolchain[1], home])
        return env

    # ---- the files and the commands ----------------------------------------------------------

    def _work(self, candidate: Candidate) -> str:
        return extract_block(candidate.text, _LANGUAGES)

    def _header_parts(self) -> tuple[list[str], list[str]]:
        imports: list[str] = []
        rest: list[str] = []
        for line in self.header.splitlines():
            (imports if line.strip().startswith("import ") else rest).append(line)
        return imports, rest

    def source(self, script: str) -> str:
        """The candidate's file, ``Candidate.lean``, for ``script`` (a whole file or a proof)."""
        imports, _ = self._header_parts()
        known = {line.strip() for line in imports}
        script = "\n".join(
            line for line in script.splitlines() if line.strip() not in known or not line.strip()
        )
        name = re.escape(self.name)
        if re.search(rf"(?<![\w.]){_DECLARES}\s+{name}(?![\w'!?.])", script):
            body = script
        else:
            proof = script.strip()
            if not proof.startswith((":=", "by")):  # a bare tactic block: indent it under by
                proof = "by\n" + textwrap.indent(proof, "  ")
            if not proof.startswith(":="):
                proof = ":= " + proof
            body = f"theorem {self.name} : {self.statement} {proof}"
        return f"{self.header}\n{body}\n"

    def check_file(self, nonce: str) -> tuple[str, int, int]:
        """The second run's file, the line of its ``guard_expr`` and of its ``#print axioms``."""
        imports, rest = self._header_parts()
        theorem = f"@_root_.{self.name}"
        lines = [*imports, "import Candidate", *rest]
        lines.append(f"theorem ttc_check_{nonce} : {self.statement} := {theorem}")
        lines.append("example : True := by")
        guard = len(lines) + 1
        lines.append(f"  guard_expr (type_of% {theorem}) =ₐ ({self.statement})")
        lines.append("  trivial")
        lines.append(f"#print axioms ttc_check_{nonce}")
        return "\n".join(lines) + "\n", guard, len(lines)

    def steps(self, work: str, nonce: str) -> list[Step]:
        """The two runs: compile the candidate, then check it."""
        binary = self.toolchain()[0]
        check, _, _ = self.check_file(nonce)
        return [
            Step(
                (binary, "--json", "-o", "Candidate.olean", "Candidate.lean"),
                {"Candidate.lean": self.source(work)},
            ),
            Step((binary, "--json", f"Check_{nonce}.lean"), {f"Check_{nonce}.lean": check}),
        ]

    # ---- the verdict -------------------------------------------------------------------------

    def refused(self, work: str) -> str:
        """Why the policy refuses ``work`` before running anything ("" if it does not)."""
        if self.policy != "strict":
            return ""
        found = _FORBIDDEN.search(_without_comments(work))
        if found is None:
            return ""
        return (
            f"the script uses {found.group(0)!r}, which LeanProof(policy='strict') refuses "
            "(it could change how the check itself is read)"
        )

    def decide(self, results: Sequence[StepResult], nonce: str) -> str:
        """Why the candidate fails given the two runs' results ("" when it passes)."""
        if not results:
            return "the sandbox ended before lean ran"
        compiled = results[0]
        messages, other = parse_messages(compiled.output)
        errors = [m for m in messages if m.severity == "error"]
        if errors:
            return f"lean rejected the proof: {errors[0]}"
        if compiled.status != 0:
            detail = "; ".join(other) or f"exit status {compiled.status}"
            return f"lean failed on the candidate's file: {detail}"
        if len(results) < 2:
            return "the sandbox ended before the check ran"
        final = results[1]
        messages, other = parse_messages(final.output)
        _, guard, printed = self.check_file(nonce)
        errors = [m for m in messages if m.severity == "error"]
        if any("unknown" in m.text and self.name in m.text for m in errors):
            return f"the script does not define {self.name}"
        if any(m.line == guard for m in errors):
            return f"the theorem {self.name} does not have the statement asked"
        if errors:
            return f"the check of the proof failed: {errors[0]}"
        if final.status != 0:
            detail = "; ".join(other) or f"exit status {final.status}"
            return f"lean failed on the check: {detail}"
        report = [
            parse_axioms(m.text)
            for m in messages
            if m.severity == "information" and m.line == printed
        ]
        found = [r for r in report if r is not None and r[0] == f"ttc_check_{nonce}"]
        if len(found) != 1:
            return "lean did not report the proof's axioms"
        axioms = found[0][1]
        if "sorryAx" in axioms:
            return "the proof uses sorry (sorryAx)"
        allowed = set(self.allowed_axioms) | (set(_NATIVE_AXIOMS) if self.native_decide else set())
        bad = [a for a in axioms if a not in allowed]
        if any(a in _NATIVE_AXIOMS for a in bad):
            return "the proof uses native_decide (Lean.ofReduceBool: it trusts the compiler)"
        if bad:
            return "the proof relies on axioms: " + ", ".join(bad)
        return ""

    async def _check(self, work: str) -> CheckReport:
        refused = self.refused(work)
        if refused:
            return CheckReport(False, trim(refused))
        nonce = secrets.token_hex(8)
        await anyio.to_thread.run_sync(self.toolchain)  # once: it asks lake, which may build
        talk, outcome, chosen = await self._run_steps(self.steps(work, nonce))
        if outcome.timed_out:
            reason = f"timed out after {self.timeout:g} s"
        elif outcome.disk_full:
            reason = f"wrote more than disk_mb={self.disk_mb} MB"
        elif talk.broken:
            reason = talk.broken
        else:
            reason = self.decide(talk.results, nonce)
        return CheckReport(
            passed=not reason,
            reason=trim(reason),
            output="\n".join(r.output for r in talk.results),
            seconds=outcome.seconds,
            timed_out=outcome.timed_out,
            isolation=chosen.kind,
            network_isolated=talk.network,
        )


def _without_comments(text: str) -> str:
    """``text`` without Lean comments (``-- ...`` and nested ``/- ... -/``) and strings."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(text):
        two = text[i : i + 2]
        if depth:
            if two == "/-":
                depth, i = depth + 1, i + 2
            elif two == "-/":
                depth, i = depth - 1, i + 2
            else:
                i += 1
        elif two == "/-":
            depth, i = 1, i + 2
        elif two == "--":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text[i] == '"':
            end = i + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append('""')
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
