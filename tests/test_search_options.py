"""The step searches' one options object, their shared parameter names (``beam_width`` with its
alias ``width``, ``selector``), the registry's aliases, and the typed search tree."""

from __future__ import annotations

import dataclasses

import pytest

from ttc import DVTS, BeamPRM, Lookahead
from ttc.adapters import FunctionModel
from ttc.errors import ConfigError
from ttc.scoring import ArithmeticPRM
from ttc.scoring.selectors import Argmax
from ttc.strategies.registry import BuildContext, StrategySpec, build_strategy
from ttc.strategies.search import SearchOptions, SearchRound
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio


def _reply(request: GenerateRequest, i: int) -> str:
    if "\n\n" not in request.params.stop:
        return f"{i} + 1 = {i + 1}. The answer is {i + 1}."
    return f"{i} + 1 = {i + 1}\n\nnot part of the step"


def test_beam_width_and_its_alias_width_are_one_setting() -> None:
    model, prm = FunctionModel(_reply), ArithmeticPRM()
    for cls in (BeamPRM, DVTS, Lookahead):
        a, b = cls(model, prm, n=4, beam_width=2), cls(model, prm, n=4, width=2)
        assert a.beam_width == a.width == b.beam_width == 2
        assert dataclasses.replace(a.options, selector=b.options.selector) == b.options
    with pytest.raises(ConfigError, match="beam_width=2 and width=4"):
        BeamPRM(model, prm, n=4, beam_width=2, width=4)
    # The error names the parameter as the caller wrote it.
    with pytest.raises(ConfigError, match="n must be a multiple of beam_width: n=6"):
        DVTS(model, prm, n=6, beam_width=4)
    with pytest.raises(ConfigError, match="beam_width"):
        SearchOptions(n=4, beam_width=0)


def test_options_are_frozen_and_checked_once() -> None:
    options = SearchOptions.of(8, 2, max_rounds=3, selector=Argmax())
    assert options.keep == 4 and options.aggregation == "last"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.n = 4  # type: ignore[misc]
    with pytest.raises(ConfigError, match="aggregation"):
        SearchOptions.of(aggregation="max")
    search = BeamPRM(FunctionModel(_reply), ArithmeticPRM(), options=options)
    assert search.n == 8 and search.options is options


async def test_a_search_from_options_runs_as_from_keywords() -> None:
    prm = ArithmeticPRM()
    keywords = BeamPRM(FunctionModel(_reply), prm, n=4, beam_width=2, max_rounds=2)
    options = SearchOptions.of(4, 2, max_rounds=2)
    from_options = BeamPRM(FunctionModel(_reply), prm, options=options)
    a, b = await keywords.run("Q\n"), await from_options.run("Q\n")
    assert a.tree == b.tree and [c.text for c in a.candidates] == [c.text for c in b.candidates]
    assert a.tree is not None
    # The tree is typed while the search runs and serialized in the documented shape.
    first = SearchRound.model_validate(
        {k: v for k, v in a.tree[0].items() if k != "beams"}
    ).model_dump()
    assert list(first) == ["round", "to_end", "path", "beams"]
    assert set(a.tree[0]["beams"][0]) == {
        "id",
        "parent",
        "step",
        "end",
        "step_score",
        "value",
        "status",
    }


def test_registry_takes_the_python_names_as_aliases() -> None:
    spec = StrategySpec.of("dvts", n=4, params={"beam_width": 2, "final_selector": "argmax"})
    assert spec.param("width") == 2 and spec.param("selector") == "argmax"
    built = build_strategy(spec, FunctionModel(_reply), BuildContext())
    assert isinstance(built, DVTS) and built.beam_width == 2
    assert isinstance(built.options.selector, Argmax)
    with pytest.raises(ConfigError, match="given twice"):
        StrategySpec.of("beam-prm", n=4, params={"width": 2, "beam_width": 2})
