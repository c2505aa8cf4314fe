"""Experiment files: a grid of evaluations (datasets x models x strategies x n x budgets) in
one store.

``ttc eval --config experiment.toml`` reads a TOML file such as::

    out = "results/graded"          # the results folder (one store for every cell), like --out
    datasets = ["graded-test"]      # shipped names or JSONL files
    models = ["embedded"]
    levels = [1, 2, 3, 4]           # only these levels (datasets with levels)
    per_level = 10                  # the first 10 questions of each level (file order)
    temperature = 0.8
    max_tokens = 200
    seed = 0
    concurrency = 1
    budgets = [250, 500, 1000]      # generated tokens per question: one cell per budget

    [[strategy]]
    name = "best-of-n"
    n = [4, 8, 16]                  # one cell per n
    scorer = "prm"
    selector = "weighted"
    prm = "arithmetic"

    [[strategy]]
    name = "beam-prm"
    n = [4, 8, 16]
    width = 2
    budgets = [500, 1000, 2000]     # a table's own budgets replace the file's

With budgets, each question's strategy runs under ``Budget(completion_tokens=b)``: generated
tokens only (prompts are free; they are what a step-wise search re-reads at every step). ``n``
stays the strategy's own, the most samples or beams, and the budget cuts it short; a strategy
so stopped returns its best answer so far (``stopped_by="budget"``), which is judged and
stored like any other.

Every cell is one run of the store, named from its strategy and keyed by its full
configuration (``Cell.config``; the name ends with a hash of it), so a rerun of the same file
skips every stored question of every cell: a killed grid resumes where it stopped, and a cell
stored by an older ttc under another hash is found and resumed (``resumed_name``).
``budget_tokens`` caps each cell; an ``adaptive-allocation`` cell spreads it over the cell's
questions (``ttc.eval.allocation``) and needs it. An unknown key, strategy, parameter or PRM
fails before anything runs, with one ``ConfigError`` naming it (and the file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttc.errors import ConfigError
from ttc.eval.datasets import Dataset, load_dataset
from ttc.eval.solver import Solver, spec_strategy
from ttc.runtime.model import Model
from ttc.strategies.registry import StrategySpec, build_params, upgrade_config
from ttc.strategies.steps import StepFormat
from ttc.types import SamplingParams

if TYPE_CHECKING:
    from ttc.eval.runner import EvalSummary, Progress
    from ttc.runtime.budget import Budget

__all__ = [
    "Cell",
    "Experiment",
    "load_experiment",
    "prepare",
    "run_experiment",
    "select_questions",
    "untemplate",
]

_TOP_KEYS = {
    "out": "the results folder",
    "datasets": "dataset names or files",
    "models": "model names",
    "strategy": "an array of [[strategy]] tables",
    "levels": "levels to keep",
    "per_level": "questions per level",
    "limit": "the first N questions",
    "temperature": "sampling temperature",
    "max_tokens": "tokens per sample",
    "seed": "seed of the first sample",
    "concurrency": "questions in flight",
    "budget_tokens": "tokens per cell at most",
    "budgets": "generated tokens per question, one cell each",
}


def select_questions(
    data: Dataset,
    *,
    levels: Sequence[int | str] | None = None,
    per_level: int | None = None,
) -> Dataset:
    """``data`` restricted to ``levels`` and to the first ``per_level`` questions of each
    level, in file order (never chosen by how a model does on them)."""
    if per_level is not None and (isinstance(per_level, bool) or per_level < 1):
        raise ConfigError(f"per_level must be a positive integer, got {per_level!r}")
    if levels is None and per_level is None:
        return data
    if not data.has_levels:
        raise ConfigError(f"dataset {data.name!r} has no levels to select from")
    wanted = {str(level) for level in levels} if levels is not None else None
    taken: dict[str | None, int] = {}
    kept = []
    for example in data.examples:
        if wanted is not None and example.level not in wanted:
            continue
        count = taken.get(example.level, 0)
        if per_level is not None and count >= per_level:
            continue
        taken[example.level] = count + 1
        kept.append(example)
    if not kept:
        raise ConfigError(
            f"dataset {data.name!r} has no questions of levels {sorted(wanted or [])}"
        )
    return dataclasses.replace(data, examples=tuple(kept))


def prepare(data: Dataset, model: str, **model_kwargs: Any) -> tuple[Dataset, Model]:
    """The dataset and the model to evaluate it on, fitted to each other.

    A model that wraps prompts in its own template (the embedded Gemma's GSM8K few-shot) is
    made raw, so that step-wise search can continue its prompts; its template and stop
    strings move to the dataset, unless the dataset has its own (the graded suite's); on
    GSM8K, the step-wise one (see ``untemplate``).
    """
    from ttc.adapters.registry import resolve_model

    llm = resolve_model(model, **model_kwargs)
    data, _ = untemplate(data, llm)
    return data, llm


def untemplate(
    data: Dataset, llm: Model, *, gsm8k_steps: bool = True
) -> tuple[Dataset, str | None]:
    """Move ``llm``'s own prompt template (``LlamaCpp.template``) to ``data`` and make the
    model send prompts as they are; returns the dataset and the template moved.

    On a GSM8K-kind dataset the embedded Gemma's template is replaced by its step-wise twin
    (``GSM8K_STEP_FEW_SHOT``, one step a line, step delimiter ``"\n"``; ``gsm8k_steps=False``
    keeps the paragraph one): with the paragraph template every solution is one step, so step
    labels and step-wise search have nothing to work on. The spec is then named
    ``<name>-steps``, so a stored run made with the other template is not resumed with this one.
    """
    template = getattr(llm, "template", None)
    if not isinstance(template, str):
        return data, None
    from ttc.adapters.gemma import (
        GSM8K_FEW_SHOT,
        GSM8K_STEP_DELIMITER,
        GSM8K_STEP_FEW_SHOT,
        TEMPLATE_STOPS,
    )

    llm.template = None  # type: ignore[attr-defined]
    if data.spec.template is None and data.spec.kind != "code":
        spec = dataclasses.replace(data.spec, template=template, stop=TEMPLATE_STOPS)
        if gsm8k_steps and spec.kind == "gsm8k" and template == GSM8K_FEW_SHOT:
            spec = dataclasses.replace(
                spec,
                name=f"{spec.name}-steps",
                template=GSM8K_STEP_FEW_SHOT,
                step_delimiter=GSM8K_STEP_DELIMITER,
            )
        data = dataclasses.replace(data, spec=spec)
    return data, template


def sampling(
    data: Dataset,
    llm: Model,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> tuple[SamplingParams, StepFormat]:
    """Sampling parameters (the model's defaults, the options given, the dataset's stop
    strings) and the step format for step-wise search on ``data``."""

    base = build_params(llm, temperature, max_tokens, seed)
    stop = base.stop + tuple(s for s in data.spec.stop if s not in base.stop)
    params = base.model_copy(update={"stop": stop})
    step_format = StepFormat(
        delimiter=data.spec.step_delimiter,
        end_markers=tuple(s for s in data.spec.stop if s != data.spec.step_delimiter),
    )
    return params, step_format


@dataclass(frozen=True)
class Cell:
    """One evaluation of the grid: a dataset, a model, a strategy, and sampling settings."""

    dataset: str
    model: str
    strategy: StrategySpec
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    levels: tuple[int, ...] | None = None
    per_level: int | None = None
    limit: int | None = None
    budget: int | None = None

    def config(self) -> dict[str, Any]:
        """The cell's full configuration (what its run in the store is keyed by). ``budget``
        (generated tokens per question) is there only when the cell has one, so the cells of
        files without budgets keep their names."""
        config = {
            **self.strategy.config(),
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "levels": list(self.levels) if self.levels is not None else None,
            "per_level": self.per_level,
            "limit": self.limit,
        }
        if self.budget is not None:
            config["budget"] = self.budget
        return config

    def slug(self) -> str:
        """``<dataset>-<strategy>-n<n>[-b<budget>]``: the readable part of ``run_name``."""
        stem = Path(self.dataset).stem if self.dataset.endswith(".jsonl") else self.dataset
        extra = self.strategy.label().split(" ", 1)[0]
        text = f"{stem}-{extra}-n{self.strategy.n}"
        if self.budget is not None:
            text += f"-b{self.budget}"
        return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-")

    def run_name(self) -> str:
        """``<slug>-<hash>``: readable, and unique to the configuration."""
        blob = json.dumps({"dataset": self.dataset, **self.config()}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        return f"{self.slug()}-{digest}"

    def question_budget(self) -> Budget | None:
        """The budget each question's strategy runs under: ``budget`` generated tokens."""
        from ttc.runtime.budget import Budget

        return Budget(completion_tokens=self.budget) if self.budget is not None else None


@dataclass(frozen=True)
class Experiment:
    """A grid of cells, the folder they are stored in, and how many questions run at once."""

    path: Path
    out: Path
    cells: tuple[Cell, ...]
    concurrency: int = 1
    budget_tokens: int | None = None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _as_list(path: Path, key: str, value: object) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{path}: {key} must not be empty")
    return items


def _int(path: Path, key: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{path}: {key} must be an integer of at least {minimum}, got {value!r}")
    return value


def _budgets(path: Path, key: str, value: object) -> tuple[int, ...]:
    """Per-question budgets: positive integers (generated tokens), each once."""
    items = tuple(_int(path, key, v) for v in _as_list(path, key, value))
    if len(set(items)) != len(items):
        raise ConfigError(f"{path}: {key} lists a budget twice: {list(items)}")
    return items


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; ``ConfigError`` names the first bad key."""
    path = Path(path)
    raw = _read_toml(path)
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r}; the keys are {', '.join(sorted(_TOP_KEYS))}"
            )
    tables = raw.get("strategy")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: needs at least one [[strategy]] table")
    datasets = [str(d) for d in _as_list(path, "datasets", raw.get("datasets", ["graded-test"]))]
    models = [str(m) for m in _as_list(path, "models", raw.get("models", ["embedded"]))]
    levels_raw = raw.get("levels")
    levels = (
        tuple(_int(path, "levels", v) for v in _as_list(path, "levels", levels_raw))
        if levels_raw is not None
        else None
    )
    per_level = _int(path, "per_level", raw["per_level"]) if "per_level" in raw else None
    limit = _int(path, "limit", raw["limit"]) if "limit" in raw else None
    seed = _int(path, "seed", raw["seed"], minimum=0) if "seed" in raw else None
    max_tokens = _int(path, "max_tokens", raw["max_tokens"]) if "max_tokens" in raw else None
    temperature = raw.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
    ):
        raise ConfigError(f"{path}: temperature must be a number, got {temperature!r}")
    budgets = _budgets(path, "budgets", raw["budgets"]) if "budgets" in raw else None
    specs: list[tuple[StrategySpec, tuple[int, ...] | None]] = []
    for i, table in enumerate(tables, 1):
        where = f"{path}: [[strategy]] #{i}"
        table = dict(table)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: needs name = one of the strategies")
        ns = _as_list(path, "n", table.pop("n", 16))
        own = table.pop("budgets", None)
        spec_budgets = (
            _budgets(path, f"[[strategy]] #{i} budgets", own) if own is not None else budgets
        )
        prm = table.pop("prm", None)
        prm_options = table.pop("prm_options", None)
        if prm is not None and not isinstance(prm, str):
            raise ConfigError(f"{where}: prm must be a PRM's name, got {prm!r}")
        if prm_options is not None and not isinstance(prm_options, dict):
            raise ConfigError(f"{where}: prm_options must be a table")
        for n in ns:
            try:
                spec = StrategySpec.of(name, n=n, params=table, prm=prm, prm_options=prm_options)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if spec.info.shared_budget and spec_budgets is not None:
                raise ConfigError(
                    f"{where}: {name} spends budget_tokens over all of a cell's questions, so "
                    "per-question budgets do not apply to it: give budgets in the other "
                    "[[strategy]] tables instead of at the top"
                )
            specs.append((spec, spec_budgets))
    budget = raw.get("budget_tokens")
    shared = next((s.name for s, _ in specs if s.info.shared_budget), None)
    if shared is not None and budget is None:
        raise ConfigError(
            f"{path}: strategy {shared!r} spends one budget over all of a cell's questions: "
            "set budget_tokens (tokens per cell)"
        )
    cells = tuple(
        Cell(
            dataset=dataset,
            model=model,
            strategy=spec,
            temperature=float(temperature) if temperature is not None else None,
            max_tokens=max_tokens,
            seed=seed,
            levels=levels,
            per_level=per_level,
            limit=limit,
            budget=per_question,
        )
        for dataset in datasets
        for model in models
        for spec, spec_budgets in specs
        for per_question in (spec_budgets or (None,))
    )
    out = Path(str(raw.get("out", "results")))  # relative to where ttc runs, like --out
    return Experiment(
        path=path,
        out=out,
        cells=cells,
        concurrency=_int(path, "concurrency", raw.get("concurrency", 1)),
        budget_tokens=_int(path, "budget_tokens", budget) if budget is not None else None,
    )


async def run_experiment(
    experiment: Experiment,
    *,
    progress: Progress | None = None,
    models: Mapping[str, Model] | None = None,
) -> list[EvalSummary]:
    """Run every cell into ``experiment.out``: stored questions are skipped, so a rerun
    resumes. Datasets are read and checked before the first cell runs; each model is built
    once (``models`` supplies ready ones by the names the file uses; those are not closed)."""
    from ttc.eval.runner import evaluate
    from ttc.runtime.budget import Budget

    loaded: dict[tuple[str, Any, Any, Any], Dataset] = {}
    for cell in experiment.cells:
        key = (cell.dataset, cell.levels, cell.per_level, cell.limit)
        if key not in loaded:
            data = load_dataset(cell.dataset, limit=cell.limit)
            loaded[key] = select_questions(data, levels=cell.levels, per_level=cell.per_level)
    given = dict(models or {})
    built: dict[tuple[str, str], tuple[Dataset, Model]] = {}
    summaries: list[EvalSummary] = []
    try:
        for index, cell in enumerate(experiment.cells, 1):
            data = loaded[(cell.dataset, cell.levels, cell.per_level, cell.limit)]
            pair = built.get((cell.dataset, cell.model))
            if pair is None:
                ready = given.get(cell.model)
                if ready is not None:
                    pair = (untemplate(data, ready)[0], ready)
                else:
                    pair = prepare(data, cell.model)
                built[(cell.dataset, cell.model)] = pair
            fitted, llm = pair
            data = dataclasses.replace(data, spec=fitted.spec)
            params, step_format = sampling(data, llm, cell.temperature, cell.max_tokens, cell.seed)
            make = spec_strategy(
                cell.strategy,
                params=params,
                step_format=step_format,
                budget=cell.question_budget(),
            )
            solver = Solver(model=llm, strategy=make, config=cell.config())
            stored = {"dataset": data.name, "format": data.spec.name, **cell.config()}
            run = resumed_name(experiment.out, cell, stored)
            if progress is not None:
                progress.note(f"cell {index}/{len(experiment.cells)}: {run}")
            budget = (
                Budget(tokens=experiment.budget_tokens)
                if experiment.budget_tokens is not None
                else None
            )
            summaries.append(
                await evaluate(
                    data,
                    solver,
                    experiment.out,
                    run=run,
                    concurrency=experiment.concurrency,
                    budget=budget,
                    progress=progress,
                )
            )
    finally:
        for _, llm in built.values():
            if llm not in given.values():
                await llm.aclose()
    return summaries


def resumed_name(out: Path, cell: Cell, config: Mapping[str, Any]) -> str:
    """The run ``cell`` is stored under in ``out``: its ``run_name``, or the run an older
    ttc stored for the same cell. That one has the same slug but another hash, because the
    cell's configuration has gained keys since (parameters the registry lists now, stored
    without them); it is resumed when its configuration matches once upgraded
    (``ttc.strategies.registry.upgrade_config``: the new keys at their defaults)."""
    from ttc.eval.store import ResultsStore

    name = cell.run_name()
    try:
        store = ResultsStore(out, readonly=True)
    except ConfigError:  # nothing stored yet
        return name
    with store:
        runs = [info.name for info in store.runs()]
        if name in runs:
            return name
        pattern = re.compile(re.escape(cell.slug()) + r"-[0-9a-f]{8}")
        for other in runs:
            if pattern.fullmatch(other) and store.matches(other, config, upgrade_config):
                return other
    return name


def describe(cells: Sequence[Cell]) -> list[Mapping[str, Any]]:
    """The grid as rows (for ``--json`` and dry runs)."""
    return [{"run": c.run_name(), "dataset": c.dataset, **c.config()} for c in cells]
