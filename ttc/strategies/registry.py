"""One registry of strategies, PRMs and selectors by name, for every front end.

``ttc run``, ``ttc eval``, experiment files and the evaluation's solver all build strategies
from a ``StrategySpec``: a strategy name, ``n``, its parameters, and (for the searches and
PRM-weighted best-of-N) a PRM by name with its options. Each strategy's parameters are listed
with their type and default in ``STRATEGIES``, so a front end can offer every one of them and a
typo fails with one ``ConfigError`` naming it.

Strategies (names as on the command line):

=================  ==========================================================================
repeated-sample    ``RepeatedSample``: n samples, judged by the verifier (an oracle in eval)
adaptive-          ``AdaptiveConsistency``: samples until the vote is settled (n: at most)
consistency
compute-optimal    ``ComputeOptimal``: a probe's difficulty picks a policy file's action
adaptive-          ``AdaptiveAllocation``: one budget over all of an evaluation's questions,
allocation         spent where votes are unsettled (``ttc eval`` only; n unused)
best-of-n          ``BestOfN``: n samples, the best by a scorer: ``scorer = "verifier"``
                   (the reference: oracle), ``"prm"`` (PRM-weighted) or ``"none"`` (a vote)
self-consistency   ``SelfConsistency``: n samples, majority vote
beam-prm           ``BeamPRM``: beam search guided by a PRM (n beams, ``width`` M)
lookahead          ``Lookahead``: beam search scoring ``k`` steps ahead
dvts               ``DVTS``: n/M independent subtrees
=================  ==========================================================================

PRMs: ``arithmetic`` (rule-based, no model), ``step-judge`` (the policy model, or
``prm.model``, asked whether each step is right), ``math-shepherd``, ``qwen``, ``rlhflow``
(transformers checkpoints in ``prm.model_dir``), ``vllm-pooling`` (a vLLM server's
``/pooling``: ``prm.model`` as ``vllm-server/<model>@<url>``), and the PRMs ``ttc train-prm``
trains: ``stepwise`` (its TRL checkpoint in ``prm.model_dir``, in-process), ``hidden-state``
(its light head, the folder in ``prm.path``, with the embedder it was trained on, or
``prm.embedder``) and ``vllm-stepwise`` (the TRL checkpoint served by vLLM: ``prm.model``).
Each PRM's options (``PRM_OPTIONS``) are typed like strategy parameters; a missing required
option, or a folder or file that is not there, fails when the spec is made, before any model
loads, naming the option.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttc.errors import ConfigError

if TYPE_CHECKING:
    from ttc.runtime.model import Model
    from ttc.scoring.base import Selector, Verifier
    from ttc.scoring.prm import PRMScorer, ProcessRewardModel
    from ttc.strategies.base import Extractor, Strategy
    from ttc.strategies.steps import StepFormat
    from ttc.types import SamplingParams

__all__ = [
    "PRMS",
    "PRM_OPTIONS",
    "SELECTORS",
    "STRATEGIES",
    "Param",
    "StrategyInfo",
    "StrategySpec",
    "build_params",
    "build_prm",
    "build_selector",
    "build_strategy",
    "parse_value",
    "policy_factory",
    "prm_scorer",
    "upgrade_config",
]

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its type, default and what it does."""

    type: type
    default: Scalar | None
    help: str
    choices: tuple[str, ...] = ()


_N = Param(int, 16, "samples, or beams for the searches")
#: Other names a parameter is accepted under: the Python API's ``beam_width`` and the searches'
#: former ``final_selector``.
ALIASES: dict[str, str] = {"beam_width": "width", "final_selector": "selector"}
_SEARCH: dict[str, Param] = {
    "width": Param(int, 4, "M, the beam width: n must be a multiple of it (default 4, else 2, 1)"),
    "max_rounds": Param(int, 40, "at most this many steps; the last one runs to the end"),
    "aggregation": Param(
        str, "last", "how a beam's step scores make one", ("last", "min", "prod", "mean")
    ),
    "selector": Param(
        str,
        "weighted",
        "how the finished beams give the answer",
        ("weighted", "argmax", "majority"),
    ),
}


@dataclass(frozen=True)
class StrategyInfo:
    """A strategy: its class's name, whether it searches step by step (then it needs a PRM and
    a raw-text model), its parameters besides ``n``, and whether it answers all the questions
    of an evaluation together under the run's one budget (``shared_budget``: it has no
    per-question form, so ``build_strategy`` refuses it)."""

    name: str
    cls: str
    summary: str
    search: bool
    params: Mapping[str, Param]
    shared_budget: bool = False

    @property
    def all_params(self) -> dict[str, Param]:
        return {"n": _N, **self.params}


STRATEGIES: dict[str, StrategyInfo] = {
    "repeated-sample": StrategyInfo(
        "repeated-sample",
        "RepeatedSample",
        "n samples judged by the verifier",
        False,
        {
            "stop_on_success": Param(bool, False, "stop at the first verified sample"),
            "selector": Param(
                str, "first-verified", "the answer", ("first-verified", "majority", "weighted")
            ),
        },
    ),
    "best-of-n": StrategyInfo(
        "best-of-n",
        "BestOfN",
        "n samples, the best by a scorer",
        False,
        {
            "scorer": Param(
                str,
                "verifier",
                "verifier (the reference, an oracle), prm (PRM-weighted) or none",
                ("verifier", "prm", "none"),
            ),
            "selector": Param(
                str,
                None,
                "argmax or weighted (default: argmax with a scorer, else majority)",
                ("argmax", "weighted", "majority"),
            ),
            "aggregation": _SEARCH["aggregation"],
            "stop_when_settled": Param(bool, False, "stop once no answer can overtake the lead"),
        },
    ),
    "self-consistency": StrategyInfo(
        "self-consistency",
        "SelfConsistency",
        "n samples, majority vote",
        False,
        {"stop_when_settled": Param(bool, False, "stop once no answer can overtake the lead")},
    ),
    "beam-prm": StrategyInfo(
        "beam-prm",
        "BeamPRM",
        "beam search guided by a PRM",
        True,
        {**_SEARCH, "remove_duplicates": Param(bool, True, "drop repeated beams of a round")},
    ),
    "lookahead": StrategyInfo(
        "lookahead",
        "Lookahead",
        "beam search scoring k steps ahead",
        True,
        {
            **_SEARCH,
            "k": Param(int, 1, "steps rolled out ahead (0: plain beam search)"),
            "remove_duplicates": Param(bool, True, "drop repeated beams of a round"),
        },
    ),
    "dvts": StrategyInfo("dvts", "DVTS", "n/M independent subtrees", True, dict(_SEARCH)),
    "adaptive-consistency": StrategyInfo(
        "adaptive-consistency",
        "AdaptiveConsistency",
        "samples until the vote is settled (n: the most samples)",
        False,
        {
            "threshold": Param(float, 0.95, "stop once the leader is the majority this surely"),
            "rule": Param(str, "beta", "the stopping rule", ("beta", "dirichlet")),
            "batch": Param(int, 1, "samples requested at a time"),
            "min_n": Param(int, 1, "samples to draw before the rule may stop"),
        },
    ),
    "compute-optimal": StrategyInfo(
        "compute-optimal",
        "ComputeOptimal",
        "a probe's difficulty picks the policy's action (n unused)",
        False,
        {
            "policy": Param(str, None, "the policy file (TOML or JSON), e.g. from ttc fit-policy"),
            "scorer": Param(
                str,
                "none",
                "prm: the PRM scores the probe (difficulty 'score') and weights votes",
                ("none", "prm"),
            ),
            "aggregation": _SEARCH["aggregation"],
        },
    ),
    "adaptive-allocation": StrategyInfo(
        "adaptive-allocation",
        "AdaptiveAllocation",
        "one budget over all the questions, spent where votes are unsettled (n unused)",
        False,
        {
            "batch": Param(int, 4, "samples a question gets per round"),
            "max_n": Param(int, 32, "the most samples one question gets"),
            "threshold": Param(float, 0.95, "a question leaves once its leader is this sure"),
            "rule": Param(str, "beta", "the stopping rule", ("beta", "dirichlet")),
        },
        shared_budget=True,
    ),
}
"""Every strategy by its command-line name."""

PRMS: dict[str, str] = {
    "arithmetic": "rule-based: recomputes each step's arithmetic (no model)",
    "step-judge": "a model asked whether each step is right (the policy, or prm.model)",
    "math-shepherd": "Math-Shepherd PRM from a transformers folder (prm.model_dir)",
    "qwen": "Qwen2.5-Math-PRM from a transformers folder (prm.model_dir)",
    "rlhflow": "RLHFlow PRM from a transformers folder (prm.model_dir)",
    "vllm-pooling": "a PRM served by vLLM /pooling (prm.model = vllm-server/<model>@<url>)",
    "stepwise": "a ttc train-prm TRL checkpoint, in-process (prm.model_dir)",
    "hidden-state": "a ttc train-prm light head on frozen hidden states (prm.path)",
    "vllm-stepwise": "a ttc train-prm TRL checkpoint served by vLLM (prm.model = "
    "vllm-server/<model>@<url>)",
}
"""Every PRM kind by name."""

SELECTORS: tuple[str, ...] = ("argmax", "weighted", "majority", "first-verified")

_TORCH: dict[str, Param] = {
    "batch_size": Param(int, 8, "solutions a forward pass"),
    "device": Param(str, None, "cpu, cuda...; default CUDA where available"),
    "dtype": Param(str, "auto", "the weights' dtype", ("auto", "bfloat16", "float16", "float32")),
    "num_threads": Param(int, None, "torch's thread count (process-wide)"),
}
_CHECKPOINT = Param(str, None, "the checkpoint: a local transformers folder")
_SERVED = Param(str, None, "the PRM server, as vllm-server/<model>@<url>")
_STEP_SEPARATOR = Param(
    str, None, "what followed each step in training (default: the checkpoint's, else \\n)"
)
PRM_OPTIONS: dict[str, dict[str, Param]] = {
    "arithmetic": {
        "right": Param(float, 1.0, "a step whose arithmetic is right"),
        "wrong": Param(float, 0.0, "a step whose arithmetic is wrong"),
        "neutral": Param(float, 0.5, "a step with nothing to check"),
    },
    "step-judge": {
        "model": Param(str, None, "the judge (a model name; default: the policy model)"),
        "renormalize": Param(bool, False, "yes / (yes + no) rather than yes alone"),
        "top_logprobs": Param(int, 10, "alternatives read at the verdict's token"),
    },
    "math-shepherd": {"model_dir": _CHECKPOINT, **_TORCH},
    "qwen": {"model_dir": _CHECKPOINT, **_TORCH},
    "rlhflow": {"model_dir": _CHECKPOINT, **_TORCH},
    "vllm-pooling": {
        "model": _SERVED,
        "separator": Param(str, "<extra_0>", "the step separator token"),
        "label": Param(int, 1, "the index of the good-step label"),
    },
    "stepwise": {"model_dir": _CHECKPOINT, "step_separator": _STEP_SEPARATOR, **_TORCH},
    "hidden-state": {
        "path": Param(str, None, "the head's folder (ttc train-prm --method head --output)"),
        "embedder": Param(
            str, None, "embedded, a .gguf or a transformers folder (default: the head's own)"
        ),
        "max_tokens": Param(int, None, "tokens a pass reads at most (default: the head's)"),
        "n_threads": Param(int, 1, "llama.cpp embedder: CPU threads"),
        "batch_size": Param(int, 8, "transformers embedder: solutions a forward pass"),
        "device": Param(str, None, "transformers embedder: cpu, cuda..."),
    },
    "vllm-stepwise": {
        "model": _SERVED,
        "step_separator": _STEP_SEPARATOR,
        "label": Param(int, 1, "the index of the good-step label"),
    },
}
"""Every PRM kind's options (``prm.KEY=VALUE`` on the command line, ``prm_options`` in a
file), typed as strategy parameters are."""

#: The option each PRM kind cannot do without, and what it is.
_PRM_NEEDS: dict[str, tuple[str, str]] = {
    "math-shepherd": ("model_dir", "a transformers folder"),
    "qwen": ("model_dir", "a transformers folder"),
    "rlhflow": ("model_dir", "a transformers folder"),
    "stepwise": ("model_dir", "the ttc train-prm --method trl checkpoint folder"),
    "hidden-state": ("path", "the folder ttc train-prm --method head saved"),
    "vllm-pooling": ("model", "vllm-server/<model>@<url>"),
    "vllm-stepwise": ("model", "vllm-server/<model>@<url>"),
}


def _known(kind: str, name: str, known: Mapping[str, Any] | tuple[str, ...]) -> None:
    if name not in known:
        kinds = "strategies" if kind == "strategy" else f"{kind}s"
        raise ConfigError(f"unknown {kind} {name!r}; the {kinds} are {', '.join(known)}")


def parse_value(key: str, text: str, kind: type) -> Scalar:
    """A command-line value as the parameter's type (``true``/``false`` for booleans)."""
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}") from None
    return text


def _typed(key: str, value: object, param: Param) -> Scalar:
    if param.type is str and isinstance(value, os.PathLike):  # a folder or file, as a Path
        value = os.fspath(value)
    if isinstance(value, str) and param.type is not str:
        value = parse_value(key, value, param.type)
    ok = (
        isinstance(value, bool)
        if param.type is bool
        else isinstance(value, param.type) and not isinstance(value, bool)
    )
    if param.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{key}: expected {param.type.__name__}, got {value!r}")
    if param.choices and value not in param.choices:
        raise ConfigError(f"{key}: must be one of {', '.join(param.choices)}, got {value!r}")
    assert isinstance(value, (bool, int, float, str))
    return value


@dataclass(frozen=True)
class StrategySpec:
    """What to build: a strategy by name, ``n``, its parameters, and its PRM.

    Build one with ``StrategySpec.of(name, n=..., params={...}, prm=..., prm_options={...})``;
    every name is checked there (unknown strategy, parameter, PRM or PRM option: a
    ``ConfigError`` naming it). ``config()`` is the flat description stored with results.
    """

    name: str
    n: int = 16
    params: tuple[tuple[str, Scalar], ...] = ()
    prm: str | None = None
    prm_options: tuple[tuple[str, Scalar], ...] = ()

    @classmethod
    def of(
        cls,
        name: str,
        *,
        n: int | str = 16,
        params: Mapping[str, object] | None = None,
        prm: str | None = None,
        prm_options: Mapping[str, object] | None = None,
    ) -> StrategySpec:
        _known("strategy", name, STRATEGIES)
        info = STRATEGIES[name]
        count = _typed("n", n, _N)
        assert isinstance(count, int)
        if count < 1:
            raise ConfigError(f"n must be a positive integer, got {n!r}")
        checked: dict[str, Scalar] = {}
        for key, value in (params or {}).items():
            key = ALIASES.get(key, key) if key not in info.params else key
            if key in checked:
                raise ConfigError(f"parameter {key!r} given twice (under an alias)")
            if key not in info.params:
                allowed = ", ".join(info.params) or "none besides n"
                raise ConfigError(
                    f"unknown parameter {key!r} for strategy {name!r}; its parameters: {allowed}"
                )
            checked[key] = _typed(key, value, info.params[key])
        if "width" in info.params:
            if "width" not in checked:
                checked["width"] = _default_width(count)
            width = int(checked["width"])
            if width < 1 or count % width:
                raise ConfigError(f"n ({count}) must be a multiple of width ({width})")
        if name == "compute-optimal":
            from ttc.strategies.compute_optimal import Policy

            if "policy" not in checked:
                raise ConfigError("compute-optimal needs policy=FILE (a policy file)")
            Policy.load(str(checked["policy"]))  # a bad file fails here, naming the problem
        needs_prm = info.search or checked.get("scorer") == "prm"
        if needs_prm and prm is None:
            prm = "arithmetic"
        if prm is not None:
            _known("PRM", prm, PRMS)
            if not needs_prm:
                raise ConfigError(
                    f"strategy {name!r} takes no PRM (best-of-n takes one with scorer=prm)"
                )
        options: dict[str, Scalar] = {}
        for key, value in (prm_options or {}).items():
            if prm is None or key not in PRM_OPTIONS[prm]:
                allowed = ", ".join(sorted(PRM_OPTIONS.get(prm or "", ()))) or "none"
                raise ConfigError(f"unknown PRM option {key!r} for PRM {prm!r}; options: {allowed}")
            options[key] = _typed(f"prm.{key}", value, PRM_OPTIONS[prm][key])
        if prm is not None:
            _check_prm(prm, options)
        spec = cls(name, count, tuple(sorted(checked.items())), prm, tuple(sorted(options.items())))
        if name == "adaptive-allocation":  # bad values fail here, before a model loads
            from ttc.strategies.adaptive_consistency import check_threshold, positive_int

            positive_int("batch", spec.param("batch"))
            positive_int("max_n", spec.param("max_n"))
            check_threshold(spec.param("threshold"))
        return spec

    @property
    def info(self) -> StrategyInfo:
        return STRATEGIES[self.name]

    def param(self, key: str) -> Any:
        """The parameter's value, or its default."""
        return dict(self.params).get(key, self.info.params[key].default)

    def config(self) -> dict[str, Any]:
        """A flat, JSON-ready description: the strategy, n, every parameter (defaults
        included), the PRM and its options."""
        out: dict[str, Any] = {"strategy": self.name, "n": self.n}
        for key in self.info.params:
            out[key] = self.param(key)
        if self.prm is not None:
            out["prm"] = self.prm
            for key, value in self.prm_options:
                out[f"prm.{key}"] = value
        return out

    def label(self) -> str:
        """A short name for plots: ``beam-prm n=16 w=4 (arithmetic)``."""
        bits = [self.name]
        if self.name == "best-of-n":
            scorer = self.param("scorer")
            bits = ["best-of-n" if scorer == "verifier" else f"best-of-n/{scorer}"]
        extra = "".join(f" {k}={v}" for k, v in self.params if k in ("width", "k"))
        return f"{bits[0]} n={self.n}{extra}"


def _default_width(n: int) -> int:
    """A search's default beam width: 4, or the largest of 2 and 1 that divides ``n``."""
    return next(w for w in (4, 2, 1) if n % w == 0)


def _require_prm_option(name: str, options: Mapping[str, object]) -> None:
    """The option PRM ``name`` cannot do without is there."""
    need = _PRM_NEEDS.get(name)
    if need is not None and need[0] not in options:
        raise ConfigError(f"PRM {name!r} needs prm.{need[0]} ({need[1]})")


#: The hidden-state options each embedder backend does not take.
_NOT_FOR_BACKEND: dict[str, tuple[str, ...]] = {
    "llama.cpp": ("batch_size", "device"),
    "transformers": ("n_threads",),
}


def _check_prm(name: str, options: dict[str, Scalar]) -> None:
    """What can be checked of a PRM's options without loading a model: the required option is
    there, the folders and files it names exist, a served PRM is a vLLM server's. A
    ``step_separator`` given as ``\\n`` (a command line cannot type a newline) becomes one."""
    _require_prm_option(name, options)
    if "step_separator" in options:
        options["step_separator"] = _unescape(str(options["step_separator"]))
    if "model_dir" in options:
        from ttc.hf_local import model_folder

        model_folder(str(options["model_dir"]), "prm.model_dir")
    if name in ("vllm-pooling", "vllm-stepwise"):
        model = str(options["model"])
        if not model.startswith("vllm-server/"):
            raise ConfigError(
                f"prm.model: PRM {name!r} is served by vLLM: give vllm-server/<model>@<url>, "
                f"got {model!r}"
            )
    if name == "hidden-state":
        _check_head(options)


def _check_head(options: Mapping[str, Scalar]) -> None:
    """A hidden-state head's folder holds a head, and its embedder (saved, or
    ``prm.embedder``) is here and takes the options given."""
    from ttc.scoring.prm_trained import embedder_spec, read_head

    try:
        saved = read_head(str(options["path"]))
    except ConfigError as exc:
        hint = " (a ttc train-prm --method trl checkpoint is PRM 'stepwise')"
        raise ConfigError(f"prm.path: {exc}{hint if 'trl-stepwise' in str(exc) else ''}") from None
    given = "embedder" in options
    embedder = embedder_spec(str(options["embedder"])) if given else dict(saved["embedder"])
    where = "prm.embedder" if given else f"prm.path: the head's embedder ({embedder})"
    backend = embedder.get("backend")
    if backend == "llama.cpp":
        model_path = embedder.get("model_path")
        if model_path is not None and not Path(str(model_path)).expanduser().is_file():
            raise ConfigError(f"{where}: no GGUF file at {model_path}; pass prm.embedder=PATH")
    elif backend == "transformers":
        from ttc.hf_local import model_folder

        try:
            model_folder(str(embedder.get("model_dir")), where)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; pass prm.embedder=FOLDER") from None
    else:
        raise ConfigError(f"{where}: the embedder's backend must be transformers or llama.cpp")
    wrong = [k for k in _NOT_FOR_BACKEND[backend] if k in options]
    if wrong:
        raise ConfigError(f"prm.{wrong[0]}: not an option of a {backend} embedder")


def _unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` as the characters they stand for."""
    table = {"n": "\n", "t": "\t", "\\": "\\"}
    return re.sub(r"\\([nt\\])", lambda m: table[m.group(1)], text)


def upgrade_config(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A run's configuration as an older ttc stored it, in today's shape, so that a run
    stored before the registry listed a parameter resumes with today's configuration:
    parameters under a former name (``final_selector``) take today's, and each parameter of
    the strategy (and its default PRM) that the stored configuration lacks takes its
    default, which is what the older version ran with. Anything else is left as stored, so
    a real difference still shows. A configuration naming no known strategy is returned as
    it is."""
    config = dict(stored)
    info = STRATEGIES.get(str(config.get("strategy")))
    if info is None:
        return config
    for old, new in ALIASES.items():
        if old in config and new in info.params and new not in config:
            config[new] = config.pop(old)
    n = config.get("n", _N.default)
    for key, param in info.params.items():
        if key in config:
            continue
        if key == "width" and isinstance(n, int) and not isinstance(n, bool):
            config[key] = _default_width(n)
        else:
            config[key] = param.default
    if "prm" not in config and (info.search or config.get("scorer") == "prm"):
        config["prm"] = "arithmetic"
    return config


# --------------------------------------------------------------------------------------------
# Building


_prm_lock = threading.Lock()
_prm_cache: dict[tuple[Any, ...], ProcessRewardModel] = {}


def build_prm(name: str, options: Mapping[str, Scalar], model: Model) -> ProcessRewardModel:
    """The PRM ``name``, built once per (name, options, policy model) in this process, so its
    step-score cache and loaded weights serve every question."""
    _known("PRM", name, PRMS)
    key = (name, tuple(sorted(options.items())), id(model))
    with _prm_lock:
        found = _prm_cache.get(key)
        if found is None:
            found = _make_prm(name, dict(options), model)
            _prm_cache[key] = found
        return found


def _make_prm(name: str, options: dict[str, Any], model: Model) -> ProcessRewardModel:
    from ttc import scoring

    if name == "arithmetic":
        return scoring.ArithmeticPRM(
            right=float(options.get("right", 1.0)),
            wrong=float(options.get("wrong", 0.0)),
            neutral=float(options.get("neutral", 0.5)),
        )
    if name == "step-judge":
        judge = model
        if "model" in options:
            from ttc.adapters.registry import resolve_model

            judge = resolve_model(str(options.pop("model")))
        return scoring.StepJudge(judge, **options)
    _require_prm_option(name, options)  # a spec made by hand, not by .of()
    if name in ("math-shepherd", "qwen", "rlhflow", "stepwise"):
        cls = {
            "math-shepherd": scoring.MathShepherdPRM,
            "qwen": scoring.QwenPRM,
            "rlhflow": scoring.RLHFlowPRM,
            "stepwise": scoring.StepwisePRM,
        }[name]
        return cls(options.pop("model_dir"), **options)  # type: ignore[no-any-return]
    if name == "hidden-state":
        return _head(options)
    from ttc.adapters.registry import resolve_model

    server = resolve_model(str(options.pop("model")))
    if name == "vllm-stepwise":
        if "step_separator" not in options:
            options["step_separator"] = _saved_separator(server.model)
        return scoring.VLLMStepwisePRM(server, **options)  # type: ignore[arg-type]  # it refuses a non-VLLMServer
    return scoring.VLLMPoolingPRM(server, **options)  # type: ignore[arg-type]


def _head(options: dict[str, Any]) -> ProcessRewardModel:
    """A saved hidden-state head with its embedder: the saved one, or ``prm.embedder``, with
    the embedder options given."""
    from ttc.scoring.prm_trained import HiddenStatePRM, embedder_spec, load_embedder, read_head

    path = str(options.pop("path"))
    named = options.pop("embedder", None)
    spec = embedder_spec(str(named)) if named is not None else read_head(path)["embedder"]
    backend = "llama.cpp" if spec.get("backend") == "llama.cpp" else "transformers"
    for key in _NOT_FOR_BACKEND[backend]:
        options.pop(key, None)
    return HiddenStatePRM.load(path, embedder=load_embedder(spec, **options))


def _saved_separator(served: str) -> str:
    """The step separator ``ttc train-prm`` saved with the checkpoint when the served model's
    name is its local folder (``vllm serve ./my-prm``), else TRL's ``"\\n"``."""
    from ttc.scoring.prm_trained import PRM_CONFIG

    config = Path(served).expanduser() / PRM_CONFIG
    try:
        saved = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    except (OSError, ValueError):
        saved = {}
    separator = saved.get("step_separator") if isinstance(saved, dict) else None
    return separator if isinstance(separator, str) and separator else "\n"


def build_selector(name: str | None) -> Selector | None:
    from ttc.scoring import Argmax, FirstVerified, MajorityVote, WeightedMajority

    if name is None:
        return None
    _known("selector", name, SELECTORS)
    table: dict[str, Callable[[], Selector]] = {
        "argmax": Argmax,
        "weighted": WeightedMajority,
        "majority": MajorityVote,
        "first-verified": lambda: FirstVerified(fallback=MajorityVote()),
    }
    return table[name]()


def prm_scorer(spec: StrategySpec, model: Model, step_format: StepFormat | None) -> PRMScorer:
    """The scorer of a strategy with ``scorer=prm``: ``spec``'s PRM over steps cut at the step
    format's delimiter, aggregated as ``spec`` says."""
    from ttc.scoring.prm import PRMScorer

    if spec.prm is None:
        raise ConfigError(f"strategy {spec.name!r} has no PRM to score with")
    return PRMScorer(
        build_prm(spec.prm, dict(spec.prm_options), model),
        delimiter=step_format.delimiter if step_format else "\n\n",
        aggregation=spec.param("aggregation"),
    )


@dataclass(frozen=True)
class BuildContext:
    """What a strategy is built with besides its spec: the verifier of the question (the
    reference), how answers are read, sampling parameters and the step format."""

    verifier: Verifier | None = None
    extract: Extractor | None = None
    params: SamplingParams | None = None
    step_format: StepFormat | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def build_strategy(spec: StrategySpec, model: Model, context: BuildContext) -> Strategy:
    """The strategy ``spec`` over ``model`` (``ConfigError`` for one that has no
    per-question form: ``adaptive-allocation``)."""
    from ttc import strategies
    from ttc.scoring.extract import extract_answer
    from ttc.strategies.search import SearchOptions

    if spec.info.shared_budget:
        raise ConfigError(
            f"{spec.name} spends one budget over many questions, so it does not run on one "
            f"prompt: use ttc eval DATASET --strategy {spec.name} --budget-tokens T (or "
            "ttc.AdaptiveAllocation(...).run(prompts) in Python); for one prompt, "
            "adaptive-consistency stops sampling once the vote is settled"
        )
    extract = context.extract or extract_answer
    common: dict[str, Any] = {"params": context.params, "extract": extract, **context.extra}
    name = spec.name
    if name == "repeated-sample":
        return strategies.RepeatedSample(
            model,
            spec.n,
            verifier=context.verifier,
            stop_on_success=spec.param("stop_on_success"),
            selector=build_selector(spec.param("selector")),
            **common,
        )
    if name == "self-consistency":
        return strategies.SelfConsistency(
            model, spec.n, stop_when_settled=spec.param("stop_when_settled"), **common
        )
    if name == "best-of-n":
        scorer_name = spec.param("scorer")
        scorer: Any = None
        if scorer_name == "verifier":
            scorer = context.verifier  # none without a reference: then it votes
        elif scorer_name == "prm":
            scorer = prm_scorer(spec, model, context.step_format)
        return strategies.BestOfN(
            model,
            spec.n,
            scorer=scorer,
            selector=build_selector(spec.param("selector")),
            stop_when_settled=spec.param("stop_when_settled"),
            **common,
        )
    if name == "adaptive-consistency":
        return strategies.AdaptiveConsistency(
            model,
            spec.n,
            threshold=spec.param("threshold"),
            rule=spec.param("rule"),
            batch=spec.param("batch"),
            min_n=spec.param("min_n"),
            **common,
        )
    if name == "compute-optimal":
        probe_scorer: Any = None
        if spec.param("scorer") == "prm":
            probe_scorer = prm_scorer(spec, model, context.step_format)
        return strategies.ComputeOptimal(
            model,
            spec.param("policy"),
            scorer=probe_scorer,
            factory=policy_factory(context),
            **common,
        )
    assert spec.prm is not None
    prm = build_prm(spec.prm, dict(spec.prm_options), model)
    options = SearchOptions.of(
        spec.n,
        spec.param("width"),
        max_rounds=spec.param("max_rounds"),
        aggregation=spec.param("aggregation"),
        remove_duplicates=spec.param("remove_duplicates") if name != "dvts" else True,
        params=context.params,
        step_format=context.step_format,
        selector=build_selector(spec.param("selector")),
        extract=extract,
    )
    if name == "beam-prm":
        return strategies.BeamPRM(model, prm, options=options, **context.extra)
    if name == "lookahead":
        return strategies.Lookahead(model, prm, k=spec.param("k"), options=options, **context.extra)
    return strategies.DVTS(model, prm, options=options, **context.extra)


def build_params(
    model: Model,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> SamplingParams:
    """The model's default sampling parameters with the options a front end was given (the
    command line's ``--temperature``, ``--max-tokens``, ``--seed``; an experiment file's)."""
    from ttc.types import SamplingParams

    update: dict[str, Any] = {}
    if temperature is not None:
        update["temperature"] = temperature
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    if seed is not None:
        update["seed"] = seed
    return SamplingParams.model_validate({**model.params.model_dump(), **update})


def policy_factory(context: BuildContext) -> Callable[[str, Mapping[str, Any], Any], Strategy]:
    """Builds the strategy a ``ComputeOptimal`` policy bin names, from the bin's parameters as
    a stored run's configuration writes them (``n``, the strategy's parameters, ``prm`` and
    ``prm.<option>``, and ``budget``: the generated tokens a question, which the strategy
    then runs under, as the experiment cell it was measured on did): what ``ttc
    fit-policy`` puts in a policy."""
    from ttc.runtime.budget import Budget
    from ttc.runtime.model import Model

    def make(name: str, params: Mapping[str, Any], source: Any) -> Strategy:
        options = {k: v for k, v in params.items() if v is not None}
        n = options.pop("n", 16)
        prm = options.pop("prm", None)
        budget = options.pop("budget", None)
        prm_options = {k[4:]: options.pop(k) for k in list(options) if k.startswith("prm.")}
        spec = StrategySpec.of(name, n=n, params=options, prm=prm, prm_options=prm_options)
        if not isinstance(source, Model):
            raise ConfigError(f"strategy {name!r} in a policy needs a model as its source")
        built = context
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
                raise ConfigError(f"budget: expected a positive integer, got {budget!r}")
            extra = {**context.extra, "budget": Budget(completion_tokens=budget)}
            built = dataclasses.replace(context, extra=extra)
        return build_strategy(spec, source, built)

    return make
