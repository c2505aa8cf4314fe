"""Prices per token, from user overrides, litellm's model price map, or a dated snapshot of it.

litellm ships its price map as a JSON file inside the package. We read that file directly
(locating the package with ``importlib.util.find_spec``, which does not import it), so prices
cost one JSON parse instead of litellm's slow import. Without litellm (the core
install), ``prices_snapshot.json`` beside this module prices the hosted presets' models (OpenAI,
Groq, Cerebras): a copy of litellm's entries for them, dated inside the file, so that a USD
budget works out of the box; litellm's map wins where both know a model. An unknown price is
reported, never taken as zero.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from ttc.validation import Float, Settings

logger = logging.getLogger("ttc.pricing")

_LITELLM_PRICE_FILE = "model_prices_and_context_window_backup.json"
_SNAPSHOT_FILE = Path(__file__).with_name("prices_snapshot.json")


class Price(Settings):
    """USD per token for prompt (input) and generated (output) tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_token: Float = Field(ge=0)
    output_per_token: Float = Field(ge=0)

    @classmethod
    def per_million(cls, input_usd: float, output_usd: float) -> Price:
        """A price given, as providers list it, in USD per million tokens."""
        return cls(input_per_token=input_usd / 1e6, output_per_token=output_usd / 1e6)

    @classmethod
    def free(cls) -> Price:
        """Zero cost: local engines and servers you run yourself."""
        return cls(input_per_token=0.0, output_per_token=0.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for ``prompt_tokens`` in and ``completion_tokens`` out."""
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


_overrides: dict[str, Price] = {}


def register_price(model: str, price: Price) -> None:
    """Set the price of ``model`` (``"provider/model"`` or a bare model name) for this process."""
    _overrides[model] = price


@lru_cache(maxsize=1)
def _litellm_table() -> dict[str, Any]:
    """litellm's map (or ``TTC_PRICE_MAP``'s file), over the snapshot of the presets' prices."""
    path_env = os.environ.get("TTC_PRICE_MAP")
    if path_env:
        return _read(Path(path_env))
    snapshot = _read(_SNAPSHOT_FILE).get("prices", {})
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return dict(snapshot)
    return {
        **snapshot,
        **_read(Path(next(iter(spec.submodule_search_locations))) / _LITELLM_PRICE_FILE),
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as f:
            table: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as exc:  # pragma: no cover - a broken install
        logger.warning("could not read the price map %s: %s", path, exc)
        return {}
    return table


def lookup_price(model: str, provider: str | None = None) -> Price | None:
    """The price of ``model`` served by ``provider``, or ``None`` if nobody knows it.

    Order: user overrides (``provider/model``, then ``model``), then litellm's map under the
    same two keys, where the bare key only counts if its ``litellm_provider`` matches.
    """
    keys = [f"{provider}/{model}", model] if provider else [model]
    for key in keys:
        if key in _overrides:
            return _overrides[key]
    table = _litellm_table()
    for key in keys:
        entry = table.get(key)
        if not isinstance(entry, dict):
            continue
        if key == model and provider and entry.get("litellm_provider") not in (None, provider):
            continue
        inp = entry.get("input_cost_per_token")
        out = entry.get("output_cost_per_token")
        if isinstance(inp, (int, float)) and isinstance(out, (int, float)):
            return Price(input_per_token=float(inp), output_per_token=float(out))
    return None
