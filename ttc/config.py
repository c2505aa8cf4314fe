"""One TOML file for a deployment: models, prices, budgets, retries, rate limits, profiles, and
the server (``ttc serve``) with its keys' database.

``ttc run --settings ttc.toml``, ``ttc serve --settings ttc.toml`` and Python read the same
file (``ttc eval --config`` keeps meaning an *experiment* file: ``ttc.eval.experiment``)::

    [models.fast]                          # a named model: clients and profiles use "fast"
    model = "groq/llama-3.1-8b-instant"    # any name ttc.adapters.resolve_model takes
    api_key_env = "GROQ_API_KEY"           # secrets come from the environment, never the file
    rpm = 30
    tpm = 6000
    max_concurrency = 16
    timeout = 60
    price = { input_per_million = 0.05, output_per_million = 0.08 }
    budget = { usd = 5.0 }                 # the model's own hard budget, across all runs
    retry = { max_attempts = 3 }
    params = { temperature = 0.7, max_tokens = 512 }

    [models.cheap]
    model = "cerebras/llama3.1-8b"
    api_key_env = "CEREBRAS_API_KEY"

    [models.reliable]                      # a model made of other entries
    fallback = ["fast", "cheap"]           # the next on 429s, 5xx, timeouts ("on" to choose)
    cooldown = 30

    [models.wide]
    router = ["fast", "cheap"]             # one fan-out's samples spread over both
    weights = [2, 1]                       # by = "rate_limit": also by each one's headroom

    [profiles.math]                        # a named strategy: model "math" on the server
    strategy = "best-of-n"
    n = 8
    model = "fast"
    scorer = "prm"                         # strategy parameters, as in experiment files
    prm = "arithmetic"
    budget = { tokens = 50000 }            # each run's budget

    [server]
    port = 8000
    keys_db = "ttc-keys.sqlite"            # or keys_db_env = "TTC_KEYS_DSN" (postgresql://...)

``load_config(path)`` reads and checks it: every error is one ``ConfigError`` naming the file,
the line and the key (``ttc.toml:7: models.fast.rpm: ...``). Every model is built in one place,
``TTCConfig.build_model``: an entry is one adapter (``model``), or a ``Fallback`` or ``Router``
(``ttc.runtime.fallback``) over other entries, each of which keeps its own budget, rate limits
and retries.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ttc.errors import ConfigError
from ttc.runtime.budget import Budget
from ttc.runtime.retry import RetryPolicy
from ttc.types import SamplingParams

if TYPE_CHECKING:
    from ttc.runtime.model import Model
    from ttc.strategies.base import Strategy
    from ttc.strategies.registry import StrategySpec

__all__ = [
    "KeyLimits",
    "ModelEntry",
    "PriceEntry",
    "ProfileEntry",
    "ServerEntry",
    "TTCConfig",
    "load_config",
    "parse_config",
    "settings_and_profile",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceEntry(_Entry):
    """USD per million tokens, as providers list prices."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class ModelEntry(_Entry):
    """A named model: an adapter by ``resolve_model`` name and the runtime's settings, or a
    ``Fallback`` (``fallback``) or ``Router`` (``router``) over other entries by name."""

    model: str | None = Field(None, min_length=1, description="A ttc.adapters.resolve_model name.")
    base_url: str | None = None
    api_key_env: str | None = Field(
        None, description="The environment variable holding the key (never the key itself)."
    )
    max_concurrency: int | None = Field(None, ge=1)
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    price: PriceEntry | None = None
    budget: Budget | None = None
    retry: RetryPolicy | None = None
    params: SamplingParams | None = None
    fallback: tuple[str, ...] | None = Field(
        None, min_length=1, description="Other entries, in order of preference (a Fallback)."
    )
    router: tuple[str, ...] | None = Field(
        None, min_length=1, description="Other entries one fan-out is spread over (a Router)."
    )
    on: tuple[str, ...] | None = Field(
        None, description="The failures that move on to another entry (FailureKind names)."
    )
    cooldown: float | None = Field(
        None, ge=0, description="Seconds a failed entry of a fallback goes to the back."
    )
    weights: tuple[Annotated[float, Field(gt=0)], ...] | None = Field(
        None, description="A router's weight of each entry (default: equal)."
    )
    by: Literal["weight", "rate_limit"] | None = Field(
        None, description="How a router deals samples: by weight, or also by rate limit headroom."
    )

    @field_validator("on")
    @classmethod
    def _on(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from ttc.runtime.fallback import FAILURE_KINDS

        for kind in value or ():
            if kind not in FAILURE_KINDS:
                raise ValueError(f"unknown failure kind {kind!r}; the kinds are {FAILURE_KINDS}")
        return value

    @property
    def kind(self) -> Literal["model", "fallback", "router"]:
        """What the entry builds: one adapter, a ``Fallback`` or a ``Router``."""
        if self.fallback is not None:
            return "fallback"
        return "router" if self.router is not None else "model"

    @property
    def members(self) -> tuple[str, ...]:
        """The entries a fallback or router names (none for one adapter)."""
        return self.fallback or self.router or ()


#: Settings of one provider, meaningless on a fallback or router (each entry it names has its
#: own); ``params`` is allowed on both (a wrapper's default sampling parameters).
_PROVIDER_KEYS = (
    "base_url",
    "api_key_env",
    "max_concurrency",
    "rpm",
    "tpm",
    "timeout",
    "price",
    "budget",
    "retry",
)
#: Keys that only one kind of entry takes.
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "on": ("fallback", "router"),
    "cooldown": ("fallback",),
    "weights": ("router",),
    "by": ("router",),
}


class ProfileEntry(BaseModel):
    """A named strategy over a named model. Keys besides these are the strategy's parameters
    (checked against ``ttc.strategies.registry``), as in experiment files."""

    model_config = ConfigDict(extra="allow", frozen=True)

    strategy: str
    model: str
    n: int = Field(16, ge=1)
    prm: str | None = None
    prm_options: dict[str, bool | int | float | str] = Field(default_factory=dict)
    budget: Budget | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    description: str = ""

    @property
    def strategy_params(self) -> dict[str, Any]:
        """The strategy parameters: every key the profile does not define itself."""
        return dict(self.model_extra or {})


class KeyLimits(_Entry):
    """A key's limits: each per ``period`` (``day``, ``month`` or ``total``); ``None`` is no
    limit. ``requests`` counts requests to the server, ``tokens`` and ``usd`` every upstream
    call they made (scorers and PRMs included)."""

    tokens: int | None = Field(None, ge=0)
    usd: float | None = Field(None, ge=0)
    requests: int | None = Field(None, ge=0)
    period: str = "day"

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        if value not in ("day", "month", "total"):
            raise ValueError(f"must be day, month or total, got {value!r}")
        return value


class ServerEntry(_Entry):
    """``ttc serve``: where it listens, its keys' database and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    keys_db: str = Field(
        "ttc-keys.sqlite",
        description="A SQLite file, or a postgresql:// DSN (prefer keys_db_env for one).",
    )
    keys_db_env: str | None = Field(
        None, description="An environment variable holding the database DSN (wins)."
    )
    auth: bool = Field(True, description="Require an API key (false: open, no per-key budgets).")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    request_timeout: float = Field(300.0, gt=0)
    shutdown_timeout: float = Field(30.0, ge=0)
    max_n: int = Field(16, ge=1, description="Choices one request may ask for.")
    max_strategy_n: int = Field(64, ge=1, description="Samples a strategy may draw per choice.")
    request_tokens: int = Field(
        200_000, ge=1, description="Tokens reserved from a key for one request at most."
    )
    request_usd: float = Field(
        1.0, gt=0, description="USD reserved from a key for one request at most."
    )
    allow_model_names: bool = Field(
        False,
        description="Let clients name any resolve_model model, not only [models] entries "
        "(a client could then make the server call any URL: keep off on a shared server).",
    )
    default_limits: KeyLimits | None = Field(
        None, description="Limits of keys created without any (ttc keys create)."
    )
    log_json: bool = True

    def database(self) -> str:
        """The keys' database: the DSN from ``keys_db_env`` if set, else ``keys_db``."""
        if self.keys_db_env:
            value = os.environ.get(self.keys_db_env)
            if not value:
                raise ConfigError(
                    f"server.keys_db_env: the environment variable {self.keys_db_env} is not set"
                )
            return value
        return self.keys_db


class _File(_Entry):
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    profiles: dict[str, ProfileEntry] = Field(default_factory=dict)
    server: ServerEntry = ServerEntry()


@dataclass(frozen=True)
class TTCConfig:
    """A checked configuration file. ``build_model(name)`` and ``build_strategy(profile)``
    make the runtime objects; ``spec(profile)`` is a profile's ``StrategySpec``."""

    path: Path | None
    models: Mapping[str, ModelEntry]
    profiles: Mapping[str, ProfileEntry]
    server: ServerEntry

    def build_model(
        self, name: str, *, built: MutableMapping[str, Model] | None = None, **overrides: Any
    ) -> Model:
        """The model ``name`` of ``[models]`` (``ConfigError`` listing them if unknown),
        with its key read from the environment now; a ``fallback`` or ``router`` entry is
        built over its entries (each once, even when two wrappers name it).

        ``built`` holds models already built by entry name: they are reused and what is built
        is added, so that an entry used on its own and inside a fallback is one model with one
        budget (how ``ttc serve`` builds its models). ``overrides`` (``resolve_model``
        keywords) apply to a plain entry only."""
        entry = self.models.get(name)
        if entry is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"unknown model {name!r}; the configured models are {known}")
        if built is not None and name in built and not overrides:
            return built[name]
        if entry.kind == "model":
            model = self._build_adapter(name, entry, overrides)
        else:
            if overrides:
                raise ConfigError(
                    f"models.{name} is a {entry.kind} of other entries: "
                    f"{', '.join(sorted(overrides))} set one provider's; set them on its entries"
                )
            model = self._build_group(entry, built if built is not None else {})
        if built is not None and not overrides:
            built[name] = model
        return model

    def _build_group(self, entry: ModelEntry, built: MutableMapping[str, Model]) -> Model:
        from ttc.runtime.fallback import DEFAULT_ON, FailureKind, Fallback, Router

        members = [self.build_model(member, built=built) for member in entry.members]
        # Checked against FailureKind when the file was read (ModelEntry._on).
        on = cast("tuple[FailureKind, ...]", entry.on) if entry.on is not None else DEFAULT_ON
        group: Model
        if entry.kind == "fallback":
            cooldown = entry.cooldown if entry.cooldown is not None else 10.0
            group = Fallback(*members, on=on, cooldown=cooldown)
        else:
            group = Router(members, weights=entry.weights, by=entry.by or "weight", on=on)
        if entry.params is not None:
            group.params = entry.params
        return group

    def _build_adapter(self, name: str, entry: ModelEntry, overrides: dict[str, Any]) -> Model:
        from ttc.adapters.registry import resolve_model
        from ttc.runtime.pricing import Price

        assert entry.model is not None
        kwargs: dict[str, Any] = {}
        if entry.api_key_env:
            key = os.environ.get(entry.api_key_env)
            if not key:
                raise ConfigError(
                    f"models.{name}.api_key_env: the environment variable "
                    f"{entry.api_key_env} is not set"
                )
            kwargs["api_key"] = key
        if entry.base_url is not None:
            kwargs["base_url"] = entry.base_url
        for key in ("max_concurrency", "rpm", "tpm", "timeout", "budget", "retry", "params"):
            value = getattr(entry, key)
            if value is not None:
                kwargs[key] = value
        if entry.price is not None:
            kwargs["price"] = Price.per_million(
                entry.price.input_per_million, entry.price.output_per_million
            )
        kwargs.update(overrides)
        return resolve_model(entry.model, **kwargs)

    def resolve(self, name: str, **kwargs: Any) -> Model:
        """The ``[models]`` entry ``name`` (``kwargs`` override its settings), else
        ``resolve_model(name, **kwargs)``: how a command line names a model."""
        if name in self.models:
            return self.build_model(name, **kwargs)
        from ttc.adapters.registry import resolve_model

        return resolve_model(name, **kwargs)

    def spec(self, profile: str) -> StrategySpec:
        """The profile's strategy as a checked ``StrategySpec``."""
        from ttc.strategies.registry import StrategySpec

        entry = self._profile(profile)
        try:
            return StrategySpec.of(
                entry.strategy,
                n=entry.n,
                params=entry.strategy_params,
                prm=entry.prm,
                prm_options=entry.prm_options,
            )
        except ConfigError as exc:
            raise ConfigError(f"profiles.{profile}: {exc}") from None

    def params(self, profile: str, model: Model) -> SamplingParams:
        """The model's sampling parameters with the profile's temperature and max_tokens."""
        entry = self._profile(profile)
        update: dict[str, Any] = {}
        if entry.temperature is not None:
            update["temperature"] = entry.temperature
        if entry.max_tokens is not None:
            update["max_tokens"] = entry.max_tokens
        return model.params.model_copy(update=update)

    def build_strategy(self, profile: str, model: Model | None = None) -> Strategy:
        """The profile's strategy over its model (or ``model``, already built from it)."""
        from ttc.strategies.registry import BuildContext, build_strategy

        entry = self._profile(profile)
        spec = self.spec(profile)
        llm = model if model is not None else self.build_model(entry.model)
        context = BuildContext(params=self.params(profile, llm), extra={"budget": entry.budget})
        return build_strategy(spec, llm, context)

    def _profile(self, name: str) -> ProfileEntry:
        entry = self.profiles.get(name)
        if entry is None:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigError(f"unknown profile {name!r}; the profiles are {known}")
        return entry


def settings_and_profile(
    path: str | Path | None, profile: str | None, model: str
) -> tuple[TTCConfig | None, StrategySpec | None, str, Budget | None]:
    """What ``ttc run --settings FILE [--profile NAME]`` uses: the configuration (``None``
    without a file), the profile's strategy (``None`` without one: the command line's), the
    model to resolve (the profile's, else ``model``) and the profile's run budget."""
    if path is None:
        if profile is not None:
            raise ConfigError("--profile needs --settings FILE (the file that defines it)")
        return None, None, model, None
    config = load_config(path)
    if profile is None:
        return config, None, model, None
    spec = config.spec(profile)
    entry = config.profiles[profile]
    return config, spec, entry.model, entry.budget


def load_config(path: str | Path) -> TTCConfig:
    """Read and check a configuration file; ``ConfigError`` names the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: str | Path | None = None) -> TTCConfig:
    """``load_config`` for text already read (``path`` only names it in errors)."""
    where = str(path) if path is not None else "<config>"
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    for section in ("models", "profiles"):
        for name in raw.get(section, {}) if isinstance(raw.get(section), dict) else ():
            if not _NAME.match(name) or "/" in name:
                raise _error(where, text, (section, name), "a name is letters, digits and _ . : -")
    _no_inline_secrets(raw, where, text)
    try:
        checked = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key" + _known_keys(loc)
        raise _error(where, text, loc, message) from None
    config = TTCConfig(
        path=Path(path) if path is not None else None,
        models=dict(checked.models),
        profiles=dict(checked.profiles),
        server=checked.server,
    )
    _check_model_kinds(config.models, where, text)
    for name, profile in config.profiles.items():
        if profile.model not in config.models:
            known = ", ".join(sorted(config.models)) or "none (add a [models.NAME] table)"
            raise _error(
                where,
                text,
                ("profiles", name, "model"),
                f"unknown model {profile.model!r}; the configured models are {known}",
            )
        if name in config.models:
            raise _error(
                where, text, ("profiles", name), f"{name!r} names both a model and a profile"
            )
        try:
            config.spec(name)
        except ConfigError as exc:
            message = str(exc).removeprefix(f"profiles.{name}: ")
            bad = _bad_key(message, profile)
            raise _error(where, text, ("profiles", name, *bad), message) from None
    return config


def _check_model_kinds(models: Mapping[str, ModelEntry], where: str, text: str) -> None:
    """Each entry is one kind with that kind's keys; fallbacks and routers name known entries,
    each once, without a cycle."""
    known = ", ".join(sorted(models))
    for name, entry in models.items():
        kinds = [k for k in ("model", "fallback", "router") if getattr(entry, k) is not None]
        if not kinds:
            raise _error(where, text, ("models", name), "needs one of model, fallback or router")
        if len(kinds) > 1:
            raise _error(
                where,
                text,
                ("models", name, kinds[1]),
                f"an entry is one of model, fallback or router, not both {kinds[0]} and {kinds[1]}",
            )
        kind = kinds[0]
        given = entry.model_fields_set
        for key, kinds_of_key in _KIND_KEYS.items():
            if key in given and kind not in kinds_of_key:
                raise _error(
                    where,
                    text,
                    ("models", name, key),
                    f"{key} is a setting of a {' or '.join(kinds_of_key)} entry, not of a "
                    f"{kind} entry",
                )
        if kind == "model":
            continue
        for key in _PROVIDER_KEYS:
            if key in given:
                raise _error(
                    where,
                    text,
                    ("models", name, key),
                    f"{key} is a setting of one provider: set it on the entries the {kind} "
                    "names (each keeps its own)",
                )
        seen: set[str] = set()
        for member in entry.members:
            if member not in models:
                raise _error(
                    where,
                    text,
                    ("models", name, kind),
                    f"unknown model {member!r}; the configured models are {known}",
                )
            if member in seen:
                raise _error(where, text, ("models", name, kind), f"names {member!r} twice")
            seen.add(member)
        if entry.weights is not None and len(entry.weights) != len(entry.members):
            raise _error(
                where,
                text,
                ("models", name, "weights"),
                f"{len(entry.weights)} weights for {len(entry.members)} entries",
            )
    for name in models:
        cycle = _cycle(models, name, (name,))
        if cycle is not None:
            entry = models[name]
            raise _error(
                where, text, ("models", name, entry.kind), "a cycle: " + " -> ".join(cycle)
            )


def _cycle(
    models: Mapping[str, ModelEntry], name: str, path: tuple[str, ...]
) -> tuple[str, ...] | None:
    """The first path from ``path``'s end back to ``name`` through members, if there is one."""
    for member in models[path[-1]].members:
        if member == name:
            return (*path, member)
        if member not in path:
            found = _cycle(models, name, (*path, member))
            if found is not None:
                return found
    return None


def _no_inline_secrets(raw: Mapping[str, Any], where: str, text: str) -> None:
    """Refuse a key or password written into the file: it belongs in the environment."""
    for name, entry in (raw.get("models") or {}).items():
        if isinstance(entry, dict) and "api_key" in entry:
            raise _error(
                where,
                text,
                ("models", name, "api_key"),
                "keys do not go in the file: set api_key_env to the environment variable "
                "that holds it",
            )


def _known_keys(loc: tuple[str, ...]) -> str:
    model: type[BaseModel] | None = _File
    for part in loc[:-1]:
        if model is None:
            break
        field = model.model_fields.get(part)
        if field is None:
            continue  # a name inside models/profiles
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if model is None:
        return ""
    return "; the keys are " + ", ".join(model.model_fields)


def _bad_key(message: str, profile: ProfileEntry) -> tuple[str, ...]:
    """The profile key a strategy-building error is about, where its message names one."""
    for key in (*profile.strategy_params, "prm_options", "prm", "n", "strategy"):
        if f"'{key}'" in message or message.startswith(f"{key}:") or f" {key} " in message:
            return (key,)
    return ("strategy",)


def _error(where: str, text: str, loc: tuple[str, ...], message: str) -> ConfigError:
    line = locate(text, loc)
    dotted = ".".join(loc)
    at = f"{where}:{line}" if line is not None else where
    return ConfigError(f"{at}: {dotted}: {message}")


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    out = []
    for part in re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", dotted):
        out.append(part[1:-1] if part[:1] in "\"'" else part)
    return tuple(out)


def locate(text: str, loc: tuple[str, ...]) -> int | None:
    """The line (1-based) where the key ``loc`` is set, or the nearest enclosing table or
    key that is: TOML readers keep no positions, so the text is scanned for headers and keys
    (good enough to point at the line; inline tables point at their key's line)."""
    table: tuple[str, ...] = ()
    best: tuple[int, int] | None = None  # (matched parts, line)
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            path = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            path = table + _parts(key.group(1))
        common = 0
        for a, b in zip(path, loc):
            if a != b:
                break
            common += 1
        if common == len(path) and common and (best is None or common > best[0]):
            best = (common, number)
    return best[1] if best is not None else None
