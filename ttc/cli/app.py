"""The ``ttc`` typer app and its top-level options (``--version``); the commands are added by
``ttc.cli``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

__all__ = ["app", "package_version"]

app = typer.Typer(
    name="ttc",
    help="Test-time compute: spend more inference on a question to get a better answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ttc {package_version()}\n")
        raise typer.Exit()


def package_version() -> str:
    """The installed package's version (``ttc.__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ttc-sdk")
    except PackageNotFoundError:
        import ttc

        return ttc.__version__


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print ttc's version and exit."
        ),
    ] = False,
) -> None:
    """Test-time compute: spend more inference on a question to get a better answer."""
