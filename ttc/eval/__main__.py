"""``python -m ttc.eval eval ...`` and ``python -m ttc.eval report ...``: the evaluation
commands without the rest of the ``ttc`` command."""

from __future__ import annotations

import typer

from ttc.cli import register

app = typer.Typer(
    name="ttc-eval",
    help="Evaluate test-time compute strategies on datasets, and report the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Evaluate test-time compute strategies on datasets, and report the results."""


register(app)

if __name__ == "__main__":
    app()
