"""Test helpers that ship with ttc: a fake OpenAI-compatible provider on loopback.

Names are imported lazily from ``ttc.testing.fake_provider`` so that
``python -m ttc.testing.fake_provider`` runs without a double-import warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ttc.testing.fake_provider import (
        ERROR_KINDS,
        FAULT_KINDS,
        FLAVORS,
        FakeProvider,
        Faults,
        Flavor,
        Reply,
        Stats,
        chat_prompt_tokens,
        count_tokens,
        default_answer,
        default_reply,
        tokenize,
    )

__all__ = [
    "ERROR_KINDS",
    "FAULT_KINDS",
    "FLAVORS",
    "FakeProvider",
    "Faults",
    "Flavor",
    "Reply",
    "Stats",
    "chat_prompt_tokens",
    "count_tokens",
    "default_answer",
    "default_reply",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ttc.testing import fake_provider

        value = getattr(fake_provider, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ttc.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
