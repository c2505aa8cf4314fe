"""``ttc serve`` and ``ttc keys``: run the server, and manage its API keys.

``--settings FILE`` (or ``TTC_SETTINGS``) is the deployment file of ``ttc.config`` (not the
experiment file that ``ttc eval --config`` takes)::

    ttc keys create alice --tokens 1000000 --usd 5 --period month --settings ttc.toml
    ttc serve --settings ttc.toml --port 8000
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ttc.config import TTCConfig
    from ttc.server.keys import KeyStore

__all__ = ["ProfileOption", "SettingsOption", "keys_app", "register", "serve_command"]

SettingsOption = Annotated[
    Path | None,
    typer.Option(
        "--settings",
        envvar="TTC_SETTINGS",
        metavar="FILE",
        help="The deployment file (models, profiles, server, keys' database): see ttc.config.",
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="NAME",
        help="A [profiles] entry of --settings: its strategy, n, parameters, model and run "
        "budget (instead of --strategy, --n, --prm, --param and --model).",
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="PATH|DSN",
        help="The keys' database (a SQLite file or postgresql:// DSN); default: the "
        "settings' server.keys_db.",
    ),
]

keys_app = typer.Typer(
    name="keys", help="API keys of ttc serve and their budgets.", no_args_is_help=True
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def _config(settings: Path | None) -> TTCConfig:
    from ttc.config import load_config, parse_config
    from ttc.errors import ConfigError

    try:
        return load_config(settings) if settings is not None else parse_config("")
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _store(settings: Path | None, db: str | None) -> KeyStore:
    from ttc.errors import TTCError
    from ttc.server.keys import open_key_store

    try:
        return open_key_store(db or _config(settings).server.database())
    except TTCError as exc:
        raise _fail(str(exc)) from None


def serve_command(
    settings: SettingsOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0: any free one).")] = None,
) -> None:
    """Serve OpenAI's API with ttc's strategies behind it (API keys and budgets per key)."""
    from ttc.errors import TTCError
    from ttc.server.runner import serve

    config = _config(settings)

    def ready(url: str) -> None:
        sys.stderr.write(f"listening on {url}\n")
        sys.stderr.flush()

    try:
        serve(config, host=host, port=port, ready=ready)
    except TTCError as exc:
        raise _fail(str(exc)) from None


def _run(coro: Any) -> Any:
    import anyio

    async def go() -> Any:
        return await coro

    return anyio.run(go)


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="A unique name for the key (who holds it).")],
    tokens: Annotated[int | None, typer.Option(min=0, help="Tokens per period.")] = None,
    usd: Annotated[float | None, typer.Option(min=0.0, help="USD per period.")] = None,
    requests: Annotated[int | None, typer.Option(min=0, help="Requests per period.")] = None,
    period: Annotated[str | None, typer.Option(help="day, month or total.")] = None,
    settings: SettingsOption = None,
    db: DbOption = None,
) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    from pydantic import ValidationError

    from ttc.config import KeyLimits
    from ttc.errors import ConfigError

    config = _config(settings)
    given = {"tokens": tokens, "usd": usd, "requests": requests}
    defaults = config.server.default_limits
    if all(v is None for v in given.values()) and defaults is not None:
        limits = defaults if period is None else defaults.model_copy(update={"period": period})
    else:
        try:
            limits = KeyLimits(**given, period=period or "day")
        except ValidationError as exc:
            raise _fail(f"--period: {exc.errors()[0]['msg']}") from None
    store = _store(settings, db)

    async def go() -> tuple[Any, str]:
        try:
            return await store.create(name, limits)
        finally:
            await store.close()

    try:
        info, secret = _run(go())
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(f"{secret}\n")
    sys.stderr.write(
        f"created key {info.name!r} ({_describe(info.limits)}); it is shown only now\n"
    )


def _describe(limits: Any) -> str:
    parts = [
        f"{k} {getattr(limits, k):g}"
        for k in ("tokens", "usd", "requests")
        if getattr(limits, k) is not None
    ]
    return (", ".join(parts) + f" per {limits.period}") if parts else "no limits"


@keys_app.command("list")
def list_keys(
    settings: SettingsOption = None,
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object a key.")] = False,
) -> None:
    """List the keys with their limits and what each spent in its current period."""
    store = _store(settings, db)

    async def go() -> list[dict[str, Any]]:
        try:
            rows = []
            for info in await store.list():
                spent = await store.spent(info)
                rows.append(
                    {
                        "name": info.name,
                        "revoked": info.revoked,
                        "limits": info.limits.model_dump(),
                        "spent": spent._asdict(),
                        "remaining": store.remaining(info, spent),
                    }
                )
            return rows
        finally:
            await store.close()

    rows = _run(go())
    if json_output:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "limits", "spent (this period)", "state")
    for row in rows:
        spent = row["spent"]
        table.add_row(
            row["name"],
            _describe(_Limits(row["limits"])),
            f"{spent['tokens']} tokens, ${spent['usd']:.6f}, {spent['requests']} requests",
            "revoked" if row["revoked"] else "active",
        )
    Console().print(table)


class _Limits:
    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


@keys_app.command("revoke")
def revoke_key(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    settings: SettingsOption = None,
    db: DbOption = None,
) -> None:
    """Revoke a key: the server answers 401 to it from now on."""
    store = _store(settings, db)

    async def go() -> bool:
        try:
            return await store.revoke(name)
        finally:
            await store.close()

    if not _run(go()):
        raise _fail(f"no key named {name!r}", 1)
    sys.stderr.write(f"revoked key {name!r}\n")


def register(app: typer.Typer) -> None:
    """Add ``ttc serve`` and ``ttc keys`` to the ``ttc`` command."""
    app.command("serve")(serve_command)
    app.add_typer(keys_app, name="keys")
