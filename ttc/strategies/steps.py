"""Generating a solution one step at a time, for step-wise search.

A step continues a partial solution: the prompt is the question (through a completion template)
followed by the steps so far, and generation stops at the step delimiter (default ``"\\n\\n"``).
Providers drop the stop text, so the delimiter is added back: every step that the beam goes on
from ends with it, and a beam's prefix is byte-identical to the text the model saw, which keeps
prefix caches hitting.

This path needs a model that sends raw text as it is: ``FunctionModel``, ``LlamaCpp(raw=True)``,
``OpenAICompatible(endpoint="completions")``, the in-process vLLM and transformers engines.
Chat endpoints need a chat step protocol, which is not implemented yet (``ConfigError``).

Finish reasons: providers report ``"stop"`` both at end of sequence and at a stop string, and do
not say which; a ``"stop"`` while stepping counts as the delimiter. A beam that really ended
then produces an empty step next, and an empty step completes it (as in search-and-learn).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttc.errors import ConfigError
from ttc.runtime.model import Model
from ttc.types import Completion, SamplingParams

__all__ = ["ANSWER_PATTERN", "Step", "StepEnd", "StepFormat", "StepGenerator"]

#: Text that says the solution has reached its answer ("The answer is 8", ``\boxed{8}``).
ANSWER_PATTERN = r"(?i:\bthe\s+(?:final\s+)?answer\s+is\b)|\\boxed\{"

StepEnd = Literal["delimiter", "eos", "length", "empty", "answer", "marker"]
"""Why a step ended: at the step delimiter (the beam goes on), or the beam is complete: end of
sequence (a step generated to the end), the length limit, an empty step, the answer pattern,
or an end marker (text that ends a solution in a few-shot format, such as ``"Question:"``)."""


@dataclass(frozen=True)
class StepFormat:
    """How a step-wise solution is written.

    Args:
        delimiter: the text that ends a step; kept at the end of every step.
        template: the completion prompt before the first step; ``{question}`` is replaced by
            the question. E.g. ``ttc.adapters.llamacpp.GSM8K_FEW_SHOT`` for the embedded Gemma
            (with ``LlamaCpp(raw=True)``).
        answer_pattern: a regular expression; a step that matches it completes the beam.
            ``None``: only the end of sequence, the length limit or an empty step do.
        end_markers: text that ends a solution (cut there, the beam complete): e.g. the
            ``"Question:"`` a few-shot base model starts the next example with. When a step
            is generated to the end they are also sent as stop strings.
    """

    delimiter: str = "\n\n"
    template: str = "{question}"
    answer_pattern: str | None = ANSWER_PATTERN
    end_markers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ConfigError("delimiter: the step delimiter must not be empty")
        if "{question}" not in self.template:
            raise ConfigError("template must contain the placeholder {question}")
        if any(not m for m in self.end_markers):
            raise ConfigError("end_markers must not contain empty strings")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(f"answer_pattern: not a regular expression ({exc})") from exc

    def prompt(self, question: str, steps: Sequence[str]) -> str:
        """The completion prompt that continues ``steps``: template, then the steps as is."""
        return self.template.replace("{question}", question) + "".join(steps)


@dataclass(frozen=True)
class Step:
    """One generated step: its text (ending with the delimiter when it stopped there), why it
    ended, and what it cost."""

    text: str
    end: StepEnd
    completion_tokens: int | None = None

    @property
    def done(self) -> bool:
        """Whether this step completes its beam."""
        return self.end != "delimiter"


class StepGenerator:
    """Generates the next step of partial solutions on a completion-style model."""

    def __init__(self, model: Model, fmt: StepFormat | None = None) -> None:
        check_step_model(model)
        self.model = model
        self.format = fmt or StepFormat()
        self._answer = (
            re.compile(self.format.answer_pattern) if self.format.answer_pattern else None
        )

    def params_for(self, params: SamplingParams, *, to_end: bool) -> SamplingParams:
        """``params`` with the step's stop strings: the delimiter while stepping, the end
        markers when generating to the end."""
        extra = self.format.end_markers if to_end else (self.format.delimiter,)
        stop = params.stop + tuple(s for s in extra if s not in params.stop)
        return params.model_copy(update={"stop": stop})

    async def next_steps(
        self,
        question: str,
        steps: Sequence[str],
        n: int,
        params: SamplingParams,
        *,
        to_end: bool = False,
    ) -> list[Step]:
        """``n`` samples of the step that follows ``steps`` (all of them one request where the
        provider has native ``n``); ``to_end`` generates the rest of the solution instead."""
        prompt = self.format.prompt(question, steps)
        completions = await self.model.generate(prompt, self.params_for(params, to_end=to_end), n)
        return [self.step(c, to_end=to_end) for c in completions]

    def step(self, completion: Completion, *, to_end: bool = False) -> Step:
        """A completion read as a step: the delimiter added back, markers cut, the end named."""
        text = completion.text
        tokens = completion.completion_tokens
        cut = min((i for m in self.format.end_markers if (i := text.find(m)) >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
            return Step(text, "marker" if text.strip() else "empty", tokens)
        if not text.strip():
            return Step(text, "empty", tokens)
        if completion.finish_reason == "length":
            return Step(text, "length", tokens)
        if to_end:
            return Step(text, "eos", tokens)
        if self._answer is not None and self._answer.search(text):
            return Step(text, "answer", tokens)  # complete: no delimiter, nothing continues it
        if completion.finish_reason == "stop":
            return Step(text + self.format.delimiter, "delimiter", tokens)
        return Step(text, "eos", tokens)


def check_step_model(model: object) -> Model:
    """``model`` if it can continue a partial solution as raw text; else a ``ConfigError``."""
    if not isinstance(model, Model):
        raise ConfigError(
            f"model must be a ttc Model (e.g. ttc.adapters.LlamaCpp), got {type(model).__name__}"
        )
    chat_only = not model.capabilities.completions or getattr(model, "endpoint", None) == "chat"
    if chat_only:
        raise ConfigError(
            f"{model.name} takes chat messages, and step-wise search on chat endpoints needs the "
            "chat step protocol, which is not implemented yet; use a completion-style model "
            "(OpenAICompatible(endpoint='completions'), LlamaCpp(raw=True), VLLM, Transformers)"
        )
    if isinstance(getattr(model, "template", None), str):
        raise ConfigError(
            f"{model.name} wraps every prompt in its template, so it cannot continue a partial "
            "solution; build it with raw=True and pass the template to the strategy instead: "
            "StepFormat(template=ttc.adapters.llamacpp.GSM8K_FEW_SHOT)"
        )
    return model
