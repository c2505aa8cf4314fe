"""Chat messages to prompt text through a Hugging Face tokenizer's chat template.

Shared by the in-process engines (transformers, vLLM). A final assistant message is continued
rather than closed, which is how a step-wise search hands a partial answer back to a model.
"""

from __future__ import annotations

from typing import Any

from ttc.errors import ConfigError
from ttc.types import Message


def chat_prompt_text(tokenizer: Any, messages: tuple[Message, ...], model_name: str) -> str:
    """The text the model sees for ``messages``; ``ConfigError`` without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"prompt: {model_name} has no chat template; send raw text (a few-shot "
            "prompt for a base model) or add a template to its tokenizer"
        )
    continue_final = messages[-1].role == "assistant"
    text: str = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=not continue_final,
        continue_final_message=continue_final,
    )
    return text
