"""The ``ttc`` command: one typer ``app``, one module per command.

``ttc run`` (``ttc.cli.run``), ``ttc eval`` and ``ttc fit-policy`` (``ttc.cli.eval``), ``ttc
report`` and ``ttc salvage`` (``ttc.cli.report``), ``ttc rescore`` (``ttc.cli.rescore``). The
options every command naming a model takes, and what they become (budget, verifier, strategy),
are in ``ttc.cli.options``; the live progress displays in ``ttc.cli.progress``. A new command
is a function in a module of its own, added to ``app`` below. Heavy modules (llama_cpp,
litellm, matplotlib, ray) load only when a command needs them.
"""

from __future__ import annotations

import typer

from ttc.cli.app import app, package_version
from ttc.cli.eval import eval_command, fit_policy_command
from ttc.cli.options import build_budget, build_params, build_strategy, build_verifier
from ttc.cli.report import report_command, salvage_command
from ttc.cli.rescore import rescore_command
from ttc.cli.run import StrategyName, run_command, summarize

__all__ = [
    "StrategyName",
    "app",
    "build_budget",
    "build_params",
    "build_strategy",
    "build_verifier",
    "package_version",
    "register",
    "summarize",
]


def register(target: typer.Typer) -> None:
    """Add the evaluation commands (``eval``, ``report``, ``salvage``, ``fit-policy``,
    ``rescore``) to a
    typer app: the ``ttc`` app, and ``python -m ttc.eval``'s."""
    target.command("eval")(eval_command)
    target.command("report")(report_command)
    target.command("salvage")(salvage_command)
    target.command("fit-policy")(fit_policy_command)
    target.command("rescore")(rescore_command)


app.command("run")(run_command)
register(app)


def _register_subsystems() -> None:
    """Commands that live next to their subsystem (``serve``, ``keys``), and the process
    supervision ones (``collect``, ``export-labels``, ``train-prm``)."""
    from ttc.cli.labels import register as register_labels
    from ttc.server.cli import register as register_server

    register_server(app)
    register_labels(app)


_register_subsystems()
