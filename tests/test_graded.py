"""The graded suite: deterministic generation, right gold answers, levels, shipped splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.errors import ConfigError
from ttc.eval import graded
from ttc.eval.datasets import load_dataset, sample_path
from ttc.scoring.extract import gsm8k_reference
from ttc.scoring.prm import check_arithmetic, safe_eval


def test_same_seed_same_problems_other_seed_others() -> None:
    first = graded.generate(7, 5)
    again = graded.generate(7, 5)
    other = graded.generate(8, 5)
    assert [p.record() for p in first] == [p.record() for p in again]
    assert [p.question for p in first] != [p.question for p in other]


@pytest.mark.parametrize("level", graded.LEVELS)
def test_level_has_that_many_steps_and_gold_is_the_steps_value(level: int) -> None:
    problems = graded.generate(3, 20, levels=[level])
    assert len(problems) == 20
    assert len({p.question for p in problems}) == 20
    for problem in problems:
        assert problem.level == level
        calcs = list(graded.solution_steps(problem.gsm8k_answer()))
        assert len(calcs) == level
        # Each step starts from the previous step's value and its annotation is right.
        value = problem.start
        for expression, written in calcs:
            assert expression.startswith(str(value))
            assert safe_eval(expression) == written
            value = written
        assert value == problem.answer
        assert gsm8k_reference(problem.gsm8k_answer()) == str(problem.answer)
        assert all(ok for _, ok in check_arithmetic(problem.solution()))
        assert min(s.value for s in problem.steps) >= 2


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="per_level"):
        graded.generate(1, 0)
    with pytest.raises(ConfigError, match="level"):
        graded.generate(1, 1, levels=[9])


def test_shipped_splits_are_the_generator_output_and_disjoint(tmp_path: Path) -> None:
    written = graded.build_splits(tmp_path)
    for name, path in written.items():
        assert path.read_text() == sample_path(name).read_text(), f"{name} is stale"
    dev = load_dataset("graded-dev")
    test = load_dataset("graded-test")
    assert len(dev) == len(test) == graded.PER_LEVEL * len(graded.LEVELS)
    assert not {e.question for e in dev} & {e.question for e in test}
    assert not {e.question for e in dev} & set(graded.FEW_SHOT_QUESTIONS)
    assert {e.level for e in test} == {str(level) for level in graded.LEVELS}
    line = json.loads(sample_path("graded-test").read_text().splitlines()[0])
    assert set(line) == {"id", "level", "question", "answer"}


def test_few_shot_template_format() -> None:
    template = graded.GRADED_FEW_SHOT
    assert template.endswith("Question: {question}\nAnswer:")
    assert template.count("The answer is") == len(graded.FEW_SHOT_LEVELS)
    # The examples show plain equations (no calculator annotations) that check out.
    assert "<<" not in template
    assert all(ok for _, ok in check_arithmetic(template))
    spec = load_dataset("graded-dev").spec
    assert spec.template == template
    assert spec.step_delimiter == graded.GRADED_STEP_DELIMITER
    assert spec.stop == graded.GRADED_STOPS
