"""Options that every ``ttc`` command naming a model takes, and what they become.

Its own module so that ``ttc.cli`` and ``ttc.eval.commands`` (which ``ttc.cli`` imports) share
them without importing each other.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ttc.strategies.registry import StrategySpec

__all__ = [
    "ApiKeyEnvOption",
    "ApiKeyOption",
    "BaseUrlOption",
    "ParamOption",
    "PrmOption",
    "endpoint_options",
    "strategy_spec",
]

#: ``--base-url``: where an HTTP model's API lives; wins over the preset's
#: ``<PROVIDER>_BASE_URL`` (a different ``@<url>`` in the model's name is an error).
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        help="The API root of an HTTP model, e.g. http://127.0.0.1:8000/v1 (else the name's "
        "@<url>, the preset's <PROVIDER>_BASE_URL variable, or its default).",
    ),
]
#: ``--api-key``: the key for an HTTP model (wins over the preset's ``<PROVIDER>_API_KEY``).
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="The API key of an HTTP model (else the preset's <PROVIDER>_API_KEY variable). "
        "Other users can see a command line: prefer --api-key-env.",
    ),
]
#: ``--api-key-env``: the environment variable holding the key (keeps it off the command line).
ApiKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        "--api-key-env",
        metavar="VAR",
        help="Read the API key from this environment variable.",
    ),
]


def endpoint_options(
    base_url: str | None = None, api_key: str | None = None, api_key_env: str | None = None
) -> dict[str, str]:
    """``--base-url``, ``--api-key`` and ``--api-key-env`` as ``resolve_model`` keywords: only
    those given, so a model that takes none still builds. ``ConfigError`` for an unset
    variable or both ways of giving a key."""
    from ttc.errors import ConfigError

    out: dict[str, str] = {}
    if base_url is not None:
        out["base_url"] = base_url
    if api_key_env is not None:
        if api_key is not None:
            raise ConfigError("--api-key and --api-key-env: give the key one way")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env: the environment variable {api_key_env} is not set")
    if api_key is not None:
        out["api_key"] = api_key
    return out


#: ``--prm``: the PRM of the step-wise searches (and of PRM-weighted best-of-N).
PrmOption = Annotated[
    str | None,
    typer.Option(
        "--prm",
        help="The PRM of the searches and of best-of-n with scorer=prm: arithmetic "
        "(default), step-judge, math-shepherd, qwen, rlhflow, vllm-pooling.",
    ),
]
#: ``--param KEY=VALUE``: any strategy parameter; ``prm.KEY=VALUE`` a PRM option.
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A strategy parameter, e.g. --param width=4 --param k=1 --param scorer=prm; "
        "prm.KEY=VALUE sets a PRM option (prm.model_dir=..., prm.model=...).",
    ),
]


def strategy_spec(name: str, n: int, prm: str | None, params: list[str] | None) -> StrategySpec:
    """``--strategy``, ``--n``, ``--prm`` and the ``--param`` pairs as a checked
    ``StrategySpec`` (``ConfigError`` naming a malformed pair or an unknown name)."""
    from ttc.errors import ConfigError
    from ttc.strategies.registry import StrategySpec

    options: dict[str, str] = {}
    for pair in params or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE (e.g. width=4), got {pair!r}")
        options[key.strip()] = value.strip()
    prm_options = {k[4:]: v for k, v in options.items() if k.startswith("prm.")}
    strategy_options = {k: v for k, v in options.items() if not k.startswith("prm.")}
    return StrategySpec.of(name, n=n, params=strategy_options, prm=prm, prm_options=prm_options)
