"""Evaluation datasets: JSONL files read through a field mapping, and the verifier per question.

A ``DatasetSpec`` says which field of a line holds the question, the reference answer, the id,
the difficulty level and so on, and what kind of reference it is: a GSM8K solution ending in
``#### N`` (graded by ``GSM8KAnswer``), a LaTeX answer (``MathAnswer``), unit tests for
code (``UnitTests``), a theorem to prove (``CoqProof``, ``LeanProof``) or an SMT-LIB problem
whose constraints judge the answer (``SMTCheck``). ``GSM8K``, ``MATH500``, ``HUMANEVAL``,
``COQ``, ``LEAN`` and ``SMT`` are the built-in specs; small samples ship with the package
(``gsm8k-sample``, ``math500-sample``, ``code-sample``, ``coq-sample``, ``smt-sample``...) so
that examples run with no download.

Files are read whole and checked before anything runs: a line that is not JSON, or that lacks a
field, raises one ``DatasetError`` naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ttc.errors import ConfigError
from ttc.eval.graded import GRADED_FEW_SHOT, GRADED_STEP_DELIMITER, GRADED_STOPS
from ttc.scoring.base import Verifier
from ttc.scoring.extract import extract_answer, gsm8k_reference

__all__ = [
    "COQ",
    "GRADED",
    "GSM8K",
    "HUMANEVAL",
    "LEAN",
    "MATH500",
    "SAMPLES",
    "SMT",
    "SPECS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Example",
    "load_dataset",
    "sample_path",
]

Kind = Literal["gsm8k", "math", "code", "coq", "lean", "smt"]
_KINDS: tuple[Kind, ...] = ("gsm8k", "math", "code", "coq", "lean", "smt")
#: Kinds whose sample is judged whole (code, a proof), not by an extracted answer.
_WHOLE: tuple[Kind, ...] = ("code", "coq", "lean")

_DATA = Path(__file__).resolve().parent / "data"


class DatasetError(ConfigError):
    """A dataset file cannot be used; the message names the file, the line and the field."""

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.field = field


@dataclass(frozen=True)
class DatasetSpec:
    """Where each part of a question lives in a JSONL line, and how its answer is graded.

    Args:
        name: the spec's name (``gsm8k``, ``math500``, ``humaneval``...).
        kind: ``"gsm8k"`` (reference ``#### N`` or a bare number, ``GSM8KAnswer``), ``"math"``
            (a LaTeX reference, ``MathAnswer``), ``"code"`` (unit tests, ``UnitTests``),
            ``"coq"``/``"lean"`` (a statement to prove, ``CoqProof``/``LeanProof``) or
            ``"smt"`` (an SMT-LIB problem, ``SMTCheck``).
        question: the field holding the prompt.
        answer: the field holding the reference answer (``gsm8k`` and ``math``), the statement
            (``coq``, ``lean``) or the SMT-LIB problem (``smt``).
        id: the field holding a unique id; without one, the line number is the id.
        level: an optional difficulty field (MATH-500's 1-5), for per-level breakdowns.
        subject: an optional subject field.
        tests: the field holding the unit tests (``code``).
        entry_point: the field naming the function under test (``code``, HumanEval style),
            the theorem (``coq``, ``lean``) or the constant asked for (``smt``; without one
            the answer is an assignment of every constant).
        header: the field holding what a proof's file starts with (``coq``: the preamble,
            ``lean``: the imports).
        template: a prompt template with a ``{question}`` placeholder (``None``: the question
            as it is, so the model adapter's own template applies).
        stop: stop strings every sample of this dataset needs (a few-shot template's end of
            answer), added to the sampling parameters.
        step_delimiter: what ends a step of a worked solution, for step-wise search
            (``"\n"`` where the few-shot solutions write one step a line).
    """

    name: str
    kind: Kind
    question: str
    answer: str | None = None
    id: str | None = None
    level: str | None = None
    subject: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    header: str | None = None
    template: str | None = None
    stop: tuple[str, ...] = ()
    step_delimiter: str = "\n\n"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.kind in ("gsm8k", "math", "coq", "lean", "smt") and not self.answer:
            raise ConfigError(f"spec {self.name!r}: a {self.kind} dataset needs an answer field")
        if self.kind == "code" and not self.tests:
            raise ConfigError(f"spec {self.name!r}: a code dataset needs a tests field")
        if self.template is not None and "{question}" not in self.template:
            raise ConfigError("template must contain the placeholder {question}")

    def with_fields(self, **fields: str | None) -> DatasetSpec:
        """This spec with some fields renamed, e.g. ``GSM8K.with_fields(question="problem")``."""
        allowed = {"question", "answer", "id", "level", "subject", "tests", "entry_point", "header"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown field role {unknown[0]!r}; the roles are {', '.join(sorted(allowed))}"
            )
        return dataclasses.replace(self, **fields)  # type: ignore[arg-type]

    def verifier(self, example: Example) -> Verifier:
        """The verifier that grades candidates of ``example`` against its reference."""
        from ttc.scoring import (
            CoqProof,
            GSM8KAnswer,
            LeanProof,
            MathAnswer,
            SMTCheck,
            UnitTests,
        )

        if self.kind == "gsm8k":
            return GSM8KAnswer(example.reference)
        if self.kind == "math":
            return MathAnswer(example.reference)
        if self.kind == "coq":
            name = example.entry_point or "theorem"
            return CoqProof(example.reference, name=name, preamble=example.header or "")
        if self.kind == "lean":
            name = example.entry_point or "theorem"
            return LeanProof(example.reference, name=name, header=example.header or "")
        if self.kind == "smt":
            return SMTCheck(example.reference, symbol=example.entry_point)
        return UnitTests(example.reference, entry_point=example.entry_point)

    def prompt(self, example: Example) -> str:
        """The prompt sent for ``example``: the question, in the template if there is one."""
        if self.template is None:
            return example.question
        return self.template.replace("{question}", example.question)

    def extractor(self) -> Callable[[str], str | None]:
        """How strategies read the answer out of a sample: no answer for code and proofs (the
        unit tests or the checker judge the whole text), the usual ``extract_answer``
        otherwise."""
        return _no_answer if self.kind in _WHOLE else extract_answer


def _no_answer(text: str) -> str | None:
    return None


GSM8K = DatasetSpec("gsm8k", "gsm8k", question="question", answer="answer")
"""GSM8K (``question``, ``answer`` ending in ``#### N``)."""

MATH500 = DatasetSpec(
    "math500",
    "math",
    question="problem",
    answer="answer",
    id="unique_id",
    level="level",
    subject="subject",
)
"""MATH-500 (``problem``, LaTeX ``answer``, ``level`` 1-5, ``subject``, ``unique_id``)."""

HUMANEVAL = DatasetSpec(
    "humaneval", "code", question="prompt", id="task_id", tests="test", entry_point="entry_point"
)
"""HumanEval-style code (``prompt``, ``test`` with ``check(candidate)``, ``entry_point``)."""

GRADED = DatasetSpec(
    "graded",
    "gsm8k",
    question="question",
    answer="answer",
    id="id",
    level="level",
    template=GRADED_FEW_SHOT,
    stop=GRADED_STOPS,
    step_delimiter=GRADED_STEP_DELIMITER,
)
"""The graded suite (``ttc.eval.graded``): GSM8K fields, ``id``, ``level`` 1-8, and the few-shot
template made for it."""

COQ = DatasetSpec(
    "coq", "coq", question="question", answer="statement", id="id", entry_point="name",
    header="preamble",
)  # fmt: skip
"""Coq theorems (``question``, ``statement``, ``name``, ``preamble``; ``CoqProof``)."""

LEAN = DatasetSpec(
    "lean", "lean", question="question", answer="statement", id="id", entry_point="name",
    header="header",
)  # fmt: skip
"""Lean 4 theorems (``question``, ``statement``, ``name``, ``header``; ``LeanProof``)."""

SMT = DatasetSpec(
    "smt", "smt", question="question", answer="problem", id="id", entry_point="symbol"
)
"""Questions judged by an SMT-LIB ``problem`` (``symbol``: the constant asked for; ``SMTCheck``)."""

SPECS: dict[str, DatasetSpec] = {
    "gsm8k": GSM8K,
    "graded": GRADED,
    "math500": MATH500,
    "math": MATH500,
    "humaneval": HUMANEVAL,
    "code": HUMANEVAL,
    "coq": COQ,
    "lean": LEAN,
    "smt": SMT,
}
"""Built-in specs by name (``math`` and ``code`` are aliases)."""

SAMPLES: dict[str, tuple[str, DatasetSpec]] = {
    "gsm8k-sample": ("gsm8k_sample.jsonl", GSM8K),
    "math500-sample": ("math500_sample.jsonl", MATH500),
    "code-sample": ("code_sample.jsonl", HUMANEVAL),
    "coq-sample": ("coq_sample.jsonl", COQ),
    "lean-sample": ("lean_sample.jsonl", LEAN),
    "smt-sample": ("smt_sample.jsonl", SMT),
    "graded-dev": ("graded_dev.jsonl", GRADED),
    "graded-test": ("graded_test.jsonl", GRADED),
}
"""The samples shipped in ``ttc/eval/data`` (see its README for sources and licenses)."""


def sample_path(name: str) -> Path:
    """The file of a shipped sample (``gsm8k-sample``, ``math500-sample``, ``code-sample``)."""
    if name not in SAMPLES:
        raise ConfigError(f"no sample named {name!r}; the samples are {', '.join(SAMPLES)}")
    return _DATA / SAMPLES[name][0]


@dataclass(frozen=True)
class Example:
    """One question of a dataset.

    ``reference`` is the graded reference: the GSM8K number, the LaTeX answer, or the unit
    tests of a code question. ``line`` is the 1-based line of the file it came from.
    """

    id: str
    line: int
    question: str
    reference: str
    level: str | None = None
    subject: str | None = None
    entry_point: str | None = None
    header: str | None = None

    @property
    def fingerprint(self) -> str:
        """A short hash of the question and its reference: a resumed run checks that each
        stored id still means the same question."""
        data = json.dumps([self.question, self.reference], ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """Questions read from one file, with the spec that reads and grades them."""

    name: str
    path: Path
    spec: DatasetSpec
    examples: tuple[Example, ...]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def prompt(self, example: Example) -> str:
        """The prompt sent for ``example``: see ``DatasetSpec.prompt``."""
        return self.spec.prompt(example)

    def verifier(self, example: Example) -> Verifier:
        """The verifier for ``example``: see ``DatasetSpec.verifier``."""
        return self.spec.verifier(example)

    @property
    def has_levels(self) -> bool:
        """Whether questions carry a difficulty level (MATH-500 does)."""
        return any(e.level is not None for e in self.examples)


def _as_spec(spec: DatasetSpec | str) -> DatasetSpec:
    if isinstance(spec, DatasetSpec):
        return spec
    found = SPECS.get(spec.lower())
    if found is None:
        raise ConfigError(f"unknown dataset format {spec!r}; the formats are {', '.join(SPECS)}")
    return found


def _required(spec: DatasetSpec) -> list[str]:
    roles = [spec.question, spec.tests if spec.kind == "code" else spec.answer]
    return [field for field in roles if field is not None]


def _detect(
    path: Path, record: Mapping[str, Any], line: int, fields: Mapping[str, str] | None
) -> DatasetSpec:
    """The first built-in spec (code, MATH-500, GSM8K) whose required fields the first record
    has, after ``fields``; its optional id field is dropped when the record lacks it."""
    for candidate in (HUMANEVAL, MATH500, GSM8K):
        spec = candidate.with_fields(**fields) if fields else candidate
        if all(field in record for field in _required(spec)):
            if spec.id is not None and spec.id not in record:
                spec = spec.with_fields(id=None)
            return spec
    keys = ", ".join(sorted(record)) or "none"
    raise DatasetError(
        path,
        f"cannot tell the dataset format from the fields ({keys}); name the format "
        "(gsm8k, math500, humaneval, coq, lean, smt) and map the fields that differ",
        line=line,
    )


def _text(path: Path, record: Mapping[str, Any], line: int, field: str, role: str) -> str:
    """The field as non-empty text (numbers are accepted and turned into text)."""
    if field not in record:
        present = ", ".join(sorted(record)) or "none"
        raise DatasetError(
            path,
            f"missing field {field!r} ({role}); the line has: {present}",
            line=line,
            field=field,
        )
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(
            path,
            f"field {field!r} ({role}) must be text, got {type(value).__name__}",
            line=line,
            field=field,
        )
    text = str(value)
    if not text.strip():
        raise DatasetError(path, f"field {field!r} ({role}) is empty", line=line, field=field)
    return text


def _optional(
    path: Path, record: Mapping[str, Any], line: int, field: str | None, role: str
) -> str | None:
    if field is None or record.get(field) is None:
        return None
    return _text(path, record, line, field, role)


def _reference(path: Path, spec: DatasetSpec, record: Mapping[str, Any], line: int) -> str:
    if spec.kind == "code":
        assert spec.tests is not None
        return _text(path, record, line, spec.tests, "unit tests")
    assert spec.answer is not None
    text = _text(path, record, line, spec.answer, "reference answer")
    if spec.kind == "gsm8k":
        try:
            return gsm8k_reference(text) if "####" in text else _gsm8k_number(text)
        except ConfigError as exc:
            raise DatasetError(
                path,
                f"field {spec.answer!r} (reference answer) has no GSM8K answer: {exc}",
                line=line,
                field=spec.answer,
            ) from None
    return text.strip()


def _gsm8k_number(text: str) -> str:
    """A bare number as a GSM8K reference (a file of numbers instead of worked solutions)."""
    from ttc.scoring import GSM8KAnswer

    GSM8KAnswer(text)  # raises ConfigError if it is not a number
    return text.strip()


def _json_error(exc: json.JSONDecodeError, line: str) -> str:
    """What is wrong with a line that is not JSON, at the column of the line where it is."""
    end = len(line.rstrip())
    if exc.msg.startswith("Unterminated string"):
        return f"not valid JSON (the string starting at column {exc.colno} never ends: truncated?)"
    if exc.pos >= end:
        return f"not valid JSON (the line ends after column {end} before the JSON does: truncated?)"
    return f"not valid JSON ({exc.msg} at column {exc.colno})"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every non-blank line; ``DatasetError`` on the first line
    that is not a JSON object."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(path, f"cannot open: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                text = raw.rstrip("\r\n")  # else an error at the end points past the line
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DatasetError(path, _json_error(exc, text), line=number) from None
                if not isinstance(record, dict):
                    raise DatasetError(
                        path,
                        f"a line must be a JSON object, got {type(record).__name__}",
                        line=number,
                    )
                yield number, record
        except UnicodeDecodeError as exc:
            raise DatasetError(path, f"not UTF-8 text ({exc.reason})") from None


def load_dataset(
    source: str | Path,
    spec: DatasetSpec | str | None = None,
    *,
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> Dataset:
    """Read a dataset: a JSONL file, or a shipped sample by name (``gsm8k-sample``...).

    Args:
        source: the file, or a sample name.
        spec: a ``DatasetSpec`` or a built-in spec's name; ``None`` detects it from the
            first line's fields (``prompt`` + ``test``: code; ``problem`` + ``answer``:
            MATH-500; ``question`` + ``answer``: GSM8K).
        fields: renamed fields, role to field name, e.g. ``{"question": "problem"}``.
        limit: read only the first ``limit`` questions.
        name: the dataset's name in results (default: the sample name or the file's stem).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    sample = str(source) if str(source) in SAMPLES else None
    if sample is not None:
        path = sample_path(sample)
        if spec is None:
            spec = SAMPLES[sample][1]
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            samples = ", ".join(SAMPLES)
            raise DatasetError(path, f"no such file (or a sample name: {samples})")
    base = _as_spec(spec) if spec is not None else None
    resolved: DatasetSpec | None = None
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line, record in read_jsonl(path):
        if resolved is None:
            if base is None:
                resolved = _detect(path, record, line, fields)
            else:
                resolved = base.with_fields(**fields) if fields else base
        examples.append(_example(path, resolved, record, line, seen))
        if limit is not None and len(examples) >= limit:
            break
    if resolved is None or not examples:
        raise DatasetError(path, "no questions in the file")
    return Dataset(
        name=name or sample or path.stem, path=path, spec=resolved, examples=tuple(examples)
    )


def _example(
    path: Path, spec: DatasetSpec, record: Mapping[str, Any], line: int, seen: dict[str, int]
) -> Example:
    question = _text(path, record, line, spec.question, "question")
    reference = _reference(path, spec, record, line)
    qid = _text(path, record, line, spec.id, "id") if spec.id is not None else str(line)
    if qid in seen:
        raise DatasetError(
            path,
            f"duplicate id {qid!r} (also on line {seen[qid]})",
            line=line,
            field=spec.id,
        )
    seen[qid] = line
    entry_point = _optional(path, record, line, spec.entry_point, "entry point")
    header = record.get(spec.header) if spec.header is not None else None
    if header is not None and not isinstance(header, str):
        raise DatasetError(
            path, f"field {spec.header!r} (header) must be text", line=line, field=spec.header
        )
    return Example(
        id=qid,
        line=line,
        question=question,
        reference=reference,
        level=_optional(path, record, line, spec.level, "level"),
        subject=_optional(path, record, line, spec.subject, "subject"),
        entry_point=entry_point,
        header=header,
    )
