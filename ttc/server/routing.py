"""Which strategy and model a request asks for: its model name, its ``ttc`` field, a profile.

The model name's grammar::

    <profile>                           a [profiles] entry of the configuration
    <model>                             a [models] entry: one plain call, n choices
    <strategy>/<model>                  a registry strategy with its default n (16)
    <strategy>-<N>/<model>              ... with n = N, e.g. self-consistency-8/fast
    best-of-<N>/<model>                 best-of-n with n = N, e.g. best-of-16/fast

``<strategy>`` is a name of ``ttc.strategies.registry.STRATEGIES`` (``best-of-n``,
``self-consistency``, ``beam-prm``, ``lookahead``, ``dvts``, ...). ``<model>`` is a
``[models]`` name, or, where the server allows it (``server.allow_model_names``), any name
``ttc.adapters.resolve_model`` takes (``groq/llama-3.1-8b-instant``).

The request's ``ttc`` object (``extra_body={"ttc": {...}}`` with the openai client) may set or
override ``strategy``, ``n``, ``params``, ``prm``, ``prm_options`` and ``profile``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ttc.config import TTCConfig
from ttc.errors import ConfigError
from ttc.runtime.budget import Budget
from ttc.strategies.registry import STRATEGIES, StrategySpec

__all__ = ["Plan", "UnknownModel", "plan_request"]

_BEST_OF = re.compile(r"^best-of-(\d+)$")
_WITH_N = re.compile(r"^(.+)-(\d+)$")
TTC_KEYS = ("strategy", "n", "params", "prm", "prm_options", "profile", "candidates", "tree")


class UnknownModel(ConfigError):
    """The model name names no model, profile or strategy (the server answers 404)."""


@dataclass(frozen=True)
class Plan:
    """What to run: a model (by its configured or full name), a strategy (``None``: one plain
    call) and a profile's run budget and sampling settings."""

    model: str
    spec: StrategySpec | None
    profile: str | None = None
    budget: Budget | None = None

    @property
    def label(self) -> str:
        """The strategy's name for metrics and responses (``none`` for a plain call)."""
        return self.spec.name if self.spec is not None else "none"


def _strategy_part(text: str) -> tuple[str, int | None] | None:
    if text in STRATEGIES:
        return text, None
    match = _BEST_OF.match(text)
    if match:
        return "best-of-n", int(match.group(1))
    match = _WITH_N.match(text)
    if match and match.group(1) in STRATEGIES:
        return match.group(1), int(match.group(2))
    return None


def _model_known(config: TTCConfig, name: str) -> bool:
    return name in config.models or (config.server.allow_model_names and "/" in name)


def plan_request(config: TTCConfig, model: str, ttc: Mapping[str, Any] | None) -> Plan:
    """The plan for a request's ``model`` and ``ttc`` fields. ``UnknownModel`` when the name
    fits nothing; ``ConfigError`` (naming ``ttc.<field>``) for a bad strategy or parameter."""
    options = dict(ttc or {})
    for key in options:
        if key not in TTC_KEYS:
            raise ConfigError(f"ttc.{key}: unknown field; the fields are {', '.join(TTC_KEYS)}")
    profile = options.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise ConfigError(f"ttc.profile: expected a profile's name, got {profile!r}")
    if profile is None and model in config.profiles:
        profile = model
    name: str | None = None
    n: Any = None
    params: dict[str, Any] = {}
    prm: Any = None
    prm_options: dict[str, Any] = {}
    budget: Budget | None = None
    if profile is not None:
        entry = config.profiles.get(profile)
        if entry is None:
            known = ", ".join(sorted(config.profiles)) or "none"
            raise ConfigError(f"ttc.profile: unknown profile {profile!r}; the profiles are {known}")
        spec = config.spec(profile)
        name, n, prm = spec.name, spec.n, spec.prm
        params, prm_options = dict(spec.params), dict(spec.prm_options)
        target = entry.model
        budget = entry.budget
    else:
        target = model
        head, slash, rest = model.partition("/")
        parsed = _strategy_part(head) if slash else None
        if parsed is not None and _model_known(config, rest):
            (name, n), target = parsed, rest
        elif not _model_known(config, model):
            raise UnknownModel(_unknown(config, model))
    if "strategy" in options:
        if not isinstance(options["strategy"], str):
            raise ConfigError(
                f"ttc.strategy: expected a strategy's name, got {options['strategy']!r}"
            )
        if options["strategy"] != name:
            params, prm, prm_options = {}, None, {}
        name = options["strategy"]
    if name is None:
        if any(k in options for k in ("n", "params", "prm", "prm_options")):
            raise ConfigError("ttc.strategy: n, params and prm need a strategy")
        return Plan(model=target, spec=None)
    for key in ("params", "prm_options"):
        if key in options and not isinstance(options[key], dict):
            raise ConfigError(f"ttc.{key}: expected an object, got {options[key]!r}")
    params.update(options.get("params") or {})
    prm_options.update(options.get("prm_options") or {})
    prm = options.get("prm", prm)
    if prm is not None and not isinstance(prm, str):
        raise ConfigError(f"ttc.prm: expected a PRM's name, got {prm!r}")
    n = options.get("n", n)
    try:
        spec = StrategySpec.of(
            name, n=n if n is not None else 16, params=params, prm=prm, prm_options=prm_options
        )
    except ConfigError as exc:
        raise ConfigError(f"ttc.strategy: {exc}") from None
    return Plan(model=target, spec=spec, profile=profile, budget=budget)


def _unknown(config: TTCConfig, model: str) -> str:
    models = ", ".join(sorted(config.models)) or "none"
    profiles = ", ".join(sorted(config.profiles)) or "none"
    return (
        f"The model {model!r} does not exist: name a configured model ({models}), a profile "
        f"({profiles}), or <strategy>[-<n>]/<model> such as best-of-8/<model> "
        f"(strategies: {', '.join(STRATEGIES)})"
    )
