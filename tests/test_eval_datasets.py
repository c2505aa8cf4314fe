"""Dataset loading: the built-in specs, the shipped samples, field mapping, and one clear error
(file, line, field) for every way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.errors import ConfigError
from ttc.eval.datasets import (
    GSM8K,
    HUMANEVAL,
    MATH500,
    DatasetError,
    DatasetSpec,
    load_dataset,
    sample_path,
)
from ttc.scoring import GSM8KAnswer, MathAnswer, UnitTests
from ttc.types import Candidate

pytestmark = pytest.mark.anyio

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, *lines: object) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_samples_ship_with_the_package_and_their_licenses() -> None:
    gsm = load_dataset("gsm8k-sample")
    math = load_dataset("math500-sample")
    code = load_dataset("code-sample")
    assert (len(gsm), len(math), len(code)) == (20, 20, 5)
    assert gsm.spec is GSM8K and math.spec is MATH500 and code.spec is HUMANEVAL
    folder = sample_path("gsm8k-sample").parent
    for notice in ("LICENSE-GSM8K", "LICENSE-MATH500"):
        text = (folder / notice).read_text()
        assert "MIT License" in text and "OpenAI" in text
    assert "gsm8k_sample.jsonl" in (folder / "README.md").read_text()


def test_the_samples_are_the_first_lines_of_the_dev_splits() -> None:
    if not SHARED.is_dir():
        pytest.skip("the shared data folder is not next to the repository")
    for sample, source in (("gsm8k-sample", "gsm8k_dev"), ("math500-sample", "math500_dev")):
        shipped = sample_path(sample).read_text().splitlines()
        assert shipped == (SHARED / f"{source}.jsonl").read_text().splitlines()[:20]


def test_gsm8k_reference_is_the_number_after_the_hashes() -> None:
    data = load_dataset("gsm8k-sample")
    first = data.examples[0]
    assert first.id == "1" and first.line == 1
    assert first.reference == "3"
    assert isinstance(data.verifier(first), GSM8KAnswer)
    assert data.prompt(first) == first.question
    assert not data.has_levels


def test_math500_carries_ids_levels_and_subjects() -> None:
    data = load_dataset("math500-sample")
    first = data.examples[0]
    assert first.id == "test/intermediate_algebra/1994.json"
    assert first.reference == "p - q"
    assert first.level == "5" and first.subject == "Intermediate Algebra"
    assert isinstance(data.verifier(first), MathAnswer)
    assert data.has_levels
    assert {e.level for e in data} == {"1", "2", "3", "4", "5"}


async def test_code_sample_verifies_its_canonical_solutions() -> None:
    data = load_dataset("code-sample")
    records = [json.loads(line) for line in sample_path("code-sample").read_text().splitlines()]
    for example, record in zip(data, records):
        verifier = data.verifier(example)
        assert isinstance(verifier, UnitTests)
        good = Candidate(text=f"```python\n{record['prompt']}{record['canonical_solution']}```")
        bad = Candidate(text=f"```python\n{record['prompt']}    return None\n```")
        assert await verifier.verify(example.question, [good, bad]) == [True, False]
    assert data.spec.extractor()("The answer is 5") is None  # unit tests judge code, not numbers


def test_format_detection_field_mapping_and_limit(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mixed.jsonl",
        {"problem": "1+1?", "solution": "2", "difficulty": 1},
        "",
        {"problem": "2+2?", "solution": "4", "difficulty": 3},
        {"problem": "3+3?", "solution": "6", "difficulty": 2},
    )
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        load_dataset(path)
    data = load_dataset(path, fields={"answer": "solution", "level": "difficulty"}, limit=2)
    assert data.spec.kind == "math" and data.spec.id is None
    assert [e.id for e in data] == ["1", "3"]  # line numbers; blank lines are skipped
    assert [e.level for e in data] == ["1", "3"]
    gsm = load_dataset(path, "gsm8k", fields={"question": "problem", "answer": "solution"})
    assert [e.reference for e in gsm] == ["2", "4", "6"]
    assert gsm.name == "mixed"


def test_spec_with_a_template(tmp_path: Path) -> None:
    spec = DatasetSpec("qa", "gsm8k", question="q", answer="a", template="Q: {question}\nA:")
    data = load_dataset(write(tmp_path / "t.jsonl", {"q": "What is 2+3?", "a": "5"}), spec)
    assert data.prompt(data.examples[0]) == "Q: What is 2+3?\nA:"
    with pytest.raises(ConfigError, match="placeholder"):
        DatasetSpec("qa", "gsm8k", question="q", answer="a", template="no placeholder")
    with pytest.raises(ConfigError, match="unknown field role 'questoin'"):
        GSM8K.with_fields(questoin="x")


@pytest.mark.parametrize(
    ("lines", "message", "line", "field"),
    [
        (
            ['{"question": "a", "answer": "#### 1"}', '{"question": "b", "answer": '],
            "not valid JSON",
            2,
            None,
        ),
        (['{"question": "a", "answer": "#### 1"}', "[1, 2]"], "must be a JSON object", 2, None),
        (
            ['{"question": "a", "answer": "#### 1"}', '{"question": "b", "solution": "#### 2"}'],
            "missing field 'answer' (reference answer); the line has: question, solution",
            2,
            "answer",
        ),
        (['{"question": "a", "answer": "no hashes here"}'], "has no GSM8K answer", 1, "answer"),
        (
            ['{"question": "", "answer": "#### 1"}'],
            "field 'question' (question) is empty",
            1,
            "question",
        ),
        (['{"question": ["a"], "answer": "#### 1"}'], "must be text, got list", 1, "question"),
    ],
)
def test_a_bad_line_names_the_file_line_and_field(
    tmp_path: Path, lines: list[str], message: str, line: int, field: str | None
) -> None:
    path = write(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, "gsm8k")
    error = caught.value
    assert str(error).startswith(f"{path}:{line}: ")
    assert message in str(error)
    assert (error.line, error.field) == (line, field)
    assert isinstance(error, ConfigError)


def test_duplicate_ids_missing_files_and_empty_files(tmp_path: Path) -> None:
    rows = [{"problem": "p", "answer": "1", "unique_id": "x"}] * 2
    with pytest.raises(DatasetError, match=r"dup.jsonl:2: duplicate id 'x' \(also on line 1\)"):
        load_dataset(write(tmp_path / "dup.jsonl", *rows), "math500")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="no questions"):
        load_dataset(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(ConfigError, match="unknown dataset format 'csv'"):
        load_dataset("gsm8k-sample", "csv")
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("gsm8k-sample", limit=0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # A truncated line used to be reported at column 1 (of the line after it).
        ('{"question": "2+2?", "answer": "#### 4"', "the line ends after column 39"),
        ('{"question": "2+2?", ', "the line ends after column 20"),
        ('{"question": "2+2?", "answer": "###', "the string starting at column 32 never ends"),
        ('{"question" "2+2?"}', "Expecting ':' delimiter at column 13"),
    ],
)
def test_a_broken_json_line_is_reported_at_its_column(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n' + line + "\n\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert f"{path}:2: not valid JSON ({message}" in str(caught.value)
    assert caught.value.line == 2
