"""Test helpers that ship with ttc: a fake OpenAI-compatible provider on loopback.

Names load on first use from ``ttc.testing.fake_provider``, so that
``python -m ttc.testing.fake_provider`` runs without a double-import warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.testing.fake_provider": (
            "FakeProvider",
            "Faults",
            "Reply",
            "Stats",
            "Flavor",
            "FLAVORS",
            "ERROR_KINDS",
            "FAULT_KINDS",
            "chat_prompt_tokens",
            "count_tokens",
            "default_answer",
            "default_reply",
            "tokenize",
        ),
    },
)

if TYPE_CHECKING:
    from ttc.testing.fake_provider import ERROR_KINDS as ERROR_KINDS
    from ttc.testing.fake_provider import FAULT_KINDS as FAULT_KINDS
    from ttc.testing.fake_provider import FLAVORS as FLAVORS
    from ttc.testing.fake_provider import FakeProvider as FakeProvider
    from ttc.testing.fake_provider import Faults as Faults
    from ttc.testing.fake_provider import Flavor as Flavor
    from ttc.testing.fake_provider import Reply as Reply
    from ttc.testing.fake_provider import Stats as Stats
    from ttc.testing.fake_provider import chat_prompt_tokens as chat_prompt_tokens
    from ttc.testing.fake_provider import count_tokens as count_tokens
    from ttc.testing.fake_provider import default_answer as default_answer
    from ttc.testing.fake_provider import default_reply as default_reply
    from ttc.testing.fake_provider import tokenize as tokenize
