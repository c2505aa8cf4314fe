"""Checks of settings, written once: every public object rejects a bad number when it is made,
with a ``ConfigError`` that names the setting, instead of failing later inside a request
(``timeout=inf`` overflowing, ``max_concurrency=nan`` hanging).

- ``check_int`` / ``check_float`` for plain constructors: the right type (a ``bool`` is not a
  number here), finite, in range;
- ``Int`` / ``Float`` for the fields of pydantic settings, and ``Settings``, their base class,
  which turns pydantic's ``ValidationError`` into a ``ConfigError`` (so ``except
  ttc.TTCError`` catches every configuration error).
"""

from __future__ import annotations

import math
import numbers
from typing import Annotated, Any, TypeVar

from pydantic import AllowInfNan, BaseModel, Strict, ValidationError

from ttc.errors import ConfigError

__all__ = ["Float", "Int", "Settings", "check_float", "check_instance", "check_int"]

#: An ``int`` field that takes no ``bool``, ``float`` or ``str``.
Int = Annotated[int, Strict()]
#: A finite ``float`` field (an ``int`` is fine) that takes no ``bool`` or ``str``.
Float = Annotated[float, Strict(), AllowInfNan(False)]

_T = TypeVar("_T")
_S = TypeVar("_S", bound="Settings")


def _bounds(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    parts = []
    if ge is not None:
        parts.append(f">= {ge:g}")
    if gt is not None:
        parts.append(f"> {gt:g}")
    if le is not None:
        parts.append(f"<= {le:g}")
    if lt is not None:
        parts.append(f"< {lt:g}")
    return " and ".join(parts)


def _check_range(
    name: str,
    value: float,
    kind: str,
    ge: float | None,
    gt: float | None,
    le: float | None,
    lt: float | None,
    given: Any,
) -> None:
    if (
        (ge is not None and not value >= ge)
        or (gt is not None and not value > gt)
        or (le is not None and not value <= le)
        or (lt is not None and not value < lt)
    ):
        raise ConfigError(f"{name} must be {kind} {_bounds(ge, gt, le, lt)}, got {given!r}")


def check_int(
    name: str,
    value: Any,
    *,
    ge: int | None = None,
    gt: int | None = None,
    le: int | None = None,
    optional: bool = False,
) -> Any:
    """``value`` as an ``int`` if it is an integer (not a ``bool``) in range; ``None`` passes
    when ``optional``. Else a ``ConfigError`` naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {_describe(value)}")
    number = int(value)
    _check_range(name, number, "an integer", ge, gt, le, None, value)
    return number


def check_float(
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    optional: bool = False,
) -> Any:
    """``value`` as a ``float`` if it is a finite number (not a ``bool``) in range; ``None``
    passes when ``optional``. Else a ``ConfigError`` naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    _check_range(name, number, "a number", ge, gt, le, lt, value)
    return number


def check_instance(name: str, value: Any, cls: type[_T], example: str, optional: bool) -> Any:
    """``value`` if it is a ``cls`` (or ``None`` when ``optional``); else a ``ConfigError``
    that shows how to make one (``example``)."""
    if (value is None and optional) or isinstance(value, cls):
        return value
    raise ConfigError(f"{name} must be a {cls.__name__} (e.g. {example}), got {_describe(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    return f"{_short(value)} ({type(value).__name__})"


def config_error(owner: str, exc: ValidationError) -> ConfigError:
    """pydantic's errors as one readable ``ConfigError``: field, constraint, value."""
    lines = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or owner
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "missing":
            lines.append(f"{field}: required")
        else:
            lines.append(f"{field}: {message}, got {_short(error['input'])}")
    return ConfigError(f"{owner}: " + "; ".join(lines))


class Settings(BaseModel):
    """A pydantic model of user settings whose bad values raise ``ConfigError``."""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    # Not a custom ``__init__`` to pydantic (as in its own ``RootModel``): validation of a
    # nested or ``model_validate``d value goes straight to pydantic-core, not through here.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls: type[_S], obj: Any, *args: Any, **kwargs: Any) -> _S:
        """``BaseModel.model_validate``, with a ``ConfigError`` for a bad value."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(cls.__name__, exc) from None
