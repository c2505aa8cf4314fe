"""Options that every ``ttc`` command naming a model takes, and what they become.

Its own module so that ``ttc.cli`` and ``ttc.eval.commands`` (which ``ttc.cli`` imports) share
them without importing each other.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

__all__ = ["ApiKeyEnvOption", "ApiKeyOption", "BaseUrlOption", "endpoint_options"]

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
