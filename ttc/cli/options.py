"""Options that every ``ttc`` command naming a model takes, and what the options become: the
endpoint, the strategy spec, the budget, the verifier and the strategy.

Shared by ``ttc run``, ``ttc eval`` and the commands to come, so that they parse alike.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ttc.strategies.registry import build_params

if TYPE_CHECKING:
    from ttc.runtime.budget import Budget
    from ttc.runtime.model import Model
    from ttc.scoring.base import Verifier
    from ttc.strategies.base import Strategy
    from ttc.strategies.registry import StrategySpec
    from ttc.types import SamplingParams

__all__ = [
    "ApiKeyEnvOption",
    "ApiKeyOption",
    "BaseUrlOption",
    "ParamOption",
    "PrmOption",
    "build_budget",
    "build_params",
    "build_strategy",
    "build_verifier",
    "endpoint_options",
    "param_pairs",
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

#: ``--model``: which model answers (the names ``ttc.adapters.resolve_model`` takes).
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'embedded' (Gemma 3 270M in-process), a .gguf path, groq/<model>, "
        "openai/<model>, vllm-server/<model>@<url>, or any LiteLLM name.",
    ),
]
MaxTokensOption = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Tokens per sample at most.")
]
SeedOption = Annotated[int | None, typer.Option(help="Seed of the first sample.")]
#: ``--budget-*``: a run budget (``build_budget``).
BudgetUsdOption = Annotated[
    float | None, typer.Option("--budget-usd", min=0.0, help="USD for the whole run.")
]
BudgetTokensOption = Annotated[
    int | None, typer.Option("--budget-tokens", min=0, help="Tokens for the whole run.")
]
BudgetRequestsOption = Annotated[
    int | None, typer.Option("--budget-requests", min=0, help="Requests for the whole run.")
]
BudgetSecondsOption = Annotated[
    float | None,
    typer.Option("--budget-seconds", min=0.001, help="Wall seconds for this invocation."),
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
        "(default), step-judge, math-shepherd, qwen, rlhflow, vllm-pooling, or one ttc "
        "train-prm trained: stepwise (prm.model_dir=), hidden-state (prm.path=), "
        "vllm-stepwise (prm.model=vllm-server/<model>@<url>).",
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
        "prm.KEY=VALUE sets a PRM option (prm.model_dir=..., prm.path=..., prm.model=...).",
    ),
]


def param_pairs(params: list[str] | None) -> dict[str, str]:
    """The ``--param KEY=VALUE`` pairs as a dict (``ConfigError`` naming a malformed pair)."""
    from ttc.errors import ConfigError

    options: dict[str, str] = {}
    for pair in params or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE (e.g. width=4), got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def strategy_spec(name: str, n: int, prm: str | None, params: list[str] | None) -> StrategySpec:
    """``--strategy``, ``--n``, ``--prm`` and the ``--param`` pairs as a checked
    ``StrategySpec`` (``ConfigError`` naming a malformed pair or an unknown name)."""
    from ttc.strategies.registry import StrategySpec

    options = param_pairs(params)
    prm_options = {k[4:]: v for k, v in options.items() if k.startswith("prm.")}
    strategy_options = {k: v for k, v in options.items() if not k.startswith("prm.")}
    return StrategySpec.of(name, n=n, params=strategy_options, prm=prm, prm_options=prm_options)


def build_budget(
    usd: float | None = None,
    tokens: int | None = None,
    requests: int | None = None,
    seconds: float | None = None,
) -> Budget | None:
    """A run budget from the ``--budget-*`` options; ``None`` when none is set."""
    from ttc.runtime.budget import Budget

    if usd is None and tokens is None and requests is None and seconds is None:
        return None
    return Budget(usd=usd, tokens=tokens, requests=requests, seconds=seconds)


def build_verifier(gold: str | None) -> Verifier | None:
    """A verifier for a reference answer: exact GSM8K number match when ``gold`` is a number
    (or a GSM8K solution ending in ``#### N``), math equivalence otherwise."""
    from ttc.errors import ConfigError
    from ttc.scoring import GSM8KAnswer, MathAnswer

    if gold is None:
        return None
    try:
        return GSM8KAnswer(gold)
    except ConfigError:
        return MathAnswer(gold)


def build_strategy(
    spec: StrategySpec,
    model: Model,
    *,
    params: SamplingParams | None = None,
    verifier: Verifier | None = None,
    budget: Budget | None = None,
    step_format: Any = None,
) -> Strategy:
    """The strategy ``spec`` names over ``model``, from ``ttc.strategies.registry``. A
    verifier judges repeated samples, and is best-of-N's scorer; self-consistency only votes
    (candidates are judged afterwards); the searches are guided by the spec's PRM."""
    from ttc.strategies.registry import BuildContext
    from ttc.strategies.registry import build_strategy as build

    context = BuildContext(
        verifier=verifier, params=params, step_format=step_format, extra={"budget": budget}
    )
    return build(spec, model, context)
