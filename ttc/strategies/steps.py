"""Generating a solution one step at a time, for step-wise search.

A step continues a partial solution and stops at the step delimiter (default ``"\\n\\n"``).
Providers drop the stop text, so the delimiter is added back: every step that the beam goes on
from ends with it. The model's capabilities pick one of three paths (``StepGenerator.path``):

* ``"completion"``: the prompt is the question (through a completion template) followed by the
  steps so far, sent as raw text; a beam's prefix is byte-identical to the text the model saw,
  which keeps prefix caches hitting. ``FunctionModel``, ``LlamaCpp(raw=True)``,
  ``OpenAICompatible(endpoint="completions")``, the in-process vLLM and transformers engines.
* ``"continue_final_message"``: a chat endpoint that can continue the last assistant message
  (``Capabilities.continue_final_message``, e.g. ``VLLMServer``): the question is the user
  message and the partial solution the final assistant message, which the server extends as is
  (vLLM's ``continue_final_message: true, add_generation_prompt: false``). The first step is
  an ordinary chat turn. Caveat: chat templates that trim message content (Llama 3's, Gemma's)
  drop the partial solution's trailing delimiter, and the model may then stop at once on it
  (an empty step); ``VLLMServer(endpoint="completions")`` takes the exact completion path.
* ``"chat_protocol"``: any other chat endpoint (OpenAI's, Groq's, Cerebras's chat): the
  question and the steps so far are handed back in a user message and the model is asked for
  the next step only, stopping at the delimiter; its reply is taken as one step (a leading
  repetition of the earlier steps is cut off).

Finish reasons: providers report ``"stop"`` both at end of sequence and at a stop string, and do
not say which; a ``"stop"`` while stepping counts as the delimiter. A beam that really ended
then produces an empty step next, and an empty step completes it (as in search-and-learn).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttc.errors import ConfigError
from ttc.runtime.model import Model
from ttc.types import Completion, Message, Prompt, SamplingParams

__all__ = [
    "ANSWER_PATTERN",
    "CHAT_STEP_INSTRUCTION",
    "CHAT_STEP_TO_END_INSTRUCTION",
    "CONTINUE_FINAL_MESSAGE_BODY",
    "DONE_REPLY",
    "Step",
    "StepEnd",
    "StepFormat",
    "StepGenerator",
    "StepPath",
    "check_step_model",
    "step_path",
]

#: Text that says the solution has reached its answer ("The answer is 8", ``\boxed{8}``).
ANSWER_PATTERN = r"(?i:\bthe\s+(?:final\s+)?answer\s+is\b)|\\boxed\{"

StepEnd = Literal["delimiter", "eos", "length", "empty", "answer", "marker"]
"""Why a step ended: at the step delimiter (the beam goes on), or the beam is complete: end of
sequence (a step generated to the end), the length limit, an empty step, the answer pattern,
or an end marker (text that ends a solution in a few-shot format, such as ``"Question:"``)."""

StepPath = Literal["completion", "continue_final_message", "chat_protocol"]
"""How steps are generated on a model: raw-text continuation, continuing the final assistant
message of a chat, or the chat step protocol (see the module docs)."""

#: What a model of the chat step protocol replies when the solution is already complete; the
#: reply is read as an empty step, which completes the beam.
DONE_REPLY = "DONE"

#: The chat step protocol's request for the next step. ``{question}``, ``{steps}`` (the steps so
#: far, or a note that there are none), ``{delimiter}`` (how a step ends, in words) and
#: ``{done}`` (``DONE_REPLY``) are filled in.
CHAT_STEP_INSTRUCTION = """Solve the problem below step by step, one step per reply.

Problem:
{question}

Steps so far:
{steps}

Write ONLY the next step of the solution: do not repeat the steps so far and do not write \
any step after it. A step ends with {delimiter}. If the solution already states its final \
answer, reply with {done} and nothing else."""

#: The chat step protocol's request for the rest of the solution (the search's last round).
CHAT_STEP_TO_END_INSTRUCTION = """Solve the problem below step by step.

Problem:
{question}

Steps so far:
{steps}

Continue the solution from where it stops, to its final answer. Do not repeat the steps so \
far. If the solution already states its final answer, reply with {done} and nothing else."""

_NO_STEPS = "(none yet: write the first step)"


@dataclass(frozen=True)
class StepFormat:
    """How a step-wise solution is written.

    Args:
        delimiter: the text that ends a step; kept at the end of every step.
        template: the completion prompt before the first step; ``{question}`` is replaced by
            the question. E.g. ``ttc.adapters.gemma.GSM8K_FEW_SHOT`` for the embedded Gemma
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
    """Generates the next step of partial solutions on any ttc ``Model``.

    ``path`` says how (``"completion"``, ``"continue_final_message"`` or ``"chat_protocol"``),
    chosen from the model's capabilities (``step_path``), so a search can show it.
    """

    def __init__(self, model: Model, fmt: StepFormat | None = None) -> None:
        check_step_model(model)
        self.model = model
        self.format = fmt or StepFormat()
        self.path: StepPath = step_path(model)
        # vLLM continues the final assistant message only when the request says so; these
        # requests go through a view of the model that adds the two fields (see _continuing).
        # The first step has no assistant message yet and goes out as an ordinary chat turn:
        # an empty final message would be rendered closed, end-of-turn token and all.
        self._sender = _continuing(model) if self.path == "continue_final_message" else model
        self._answer = (
            re.compile(self.format.answer_pattern) if self.format.answer_pattern else None
        )

    def params_for(self, params: SamplingParams, *, to_end: bool) -> SamplingParams:
        """``params`` with the step's stop strings: the delimiter while stepping, the end
        markers when generating to the end."""
        extra = self.format.end_markers if to_end else (self.format.delimiter,)
        stop = params.stop + tuple(s for s in extra if s not in params.stop)
        return params.model_copy(update={"stop": stop})

    def prompt(self, question: str, steps: Sequence[str], *, to_end: bool = False) -> Prompt:
        """What is sent for the step after ``steps`` on this generator's path."""
        if self.path == "completion":
            return self.format.prompt(question, steps)
        text = self.format.template.replace("{question}", question)
        if self.path == "continue_final_message":
            user = Message(role="user", content=text)
            if not steps:  # nothing to continue: an ordinary turn (see ``__init__``)
                return (user,)
            return (user, Message(role="assistant", content="".join(steps)))
        delimiter = self.format.delimiter
        described = "a blank line" if delimiter == "\n\n" else f"the text {delimiter!r}"
        instruction = CHAT_STEP_TO_END_INSTRUCTION if to_end else CHAT_STEP_INSTRUCTION
        filled = (
            instruction.replace("{steps}", "".join(steps).strip() or _NO_STEPS)
            .replace("{delimiter}", described)
            .replace("{done}", DONE_REPLY)
            .replace("{question}", text)  # last: the question may contain the other fields
        )
        return (Message(role="user", content=filled),)

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
        provider has native ``n``; the runtime fans out where it has not); ``to_end``
        generates the rest of the solution instead."""
        prompt = self.prompt(question, steps, to_end=to_end)
        sender = self._sender if steps else self.model
        completions = await sender.generate(prompt, self.params_for(params, to_end=to_end), n)
        return self.read(completions, steps, to_end=to_end)

    def read(
        self, completions: Sequence[Completion], steps: Sequence[str], *, to_end: bool = False
    ) -> list[Step]:
        """Completions of the step after ``steps`` read as steps (also the paid-for part of
        a request the budget cut short)."""
        if self.path == "chat_protocol":
            completions = [self._reply_as_step(c, steps) for c in completions]
        return [self.step(c, to_end=to_end) for c in completions]

    def _reply_as_step(self, completion: Completion, steps: Sequence[str]) -> Completion:
        """A chat reply trimmed to the step it should be: surrounding whitespace and a leading
        repetition of the earlier steps removed, ``DONE_REPLY`` read as an empty step.

        A reply that is nothing but an echo (the stop string cut it after a repeated step) is
        kept as it is: emptied, it would end the beam as if the solution were complete; kept,
        it is a repeated step that the PRM can score down."""
        text = completion.text.strip()
        earlier = "".join(steps).strip()
        rest = text
        if earlier and rest.startswith(earlier):
            rest = rest[len(earlier) :].strip()
        else:  # echoed steps one by one, as far as they go
            for step in steps:
                done = step.strip()
                if done and rest.startswith(done):
                    rest = rest[len(done) :].lstrip()
                else:
                    break
        if rest:
            text = rest
        if text.strip(" .*`'\"").upper() == DONE_REPLY:
            text = ""
        return completion.model_copy(update={"text": text})

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


def step_path(model: Model) -> StepPath:
    """The step path ``model``'s capabilities allow: raw text where it takes raw text as is,
    else continuing the final assistant message where the chat endpoint can, else the chat
    step protocol."""
    caps = model.capabilities
    if caps.completions and getattr(model, "endpoint", None) != "chat":
        return "completion"
    if caps.continue_final_message:
        return "continue_final_message"
    return "chat_protocol"


#: The request fields that make vLLM's chat endpoint extend the final assistant message instead
#: of starting a new turn.
CONTINUE_FINAL_MESSAGE_BODY: dict[str, bool] = {
    "continue_final_message": True,
    "add_generation_prompt": False,
}


def _continuing(model: Model) -> Model:
    """``model`` itself, or for an HTTP adapter with ``extra_body`` a shallow copy whose
    requests also carry ``CONTINUE_FINAL_MESSAGE_BODY``.

    The copy shares everything else with the original (usage, ledger, rate limiter, connection
    pools), so its calls count as the model's; only its ``extra_body`` dict is its own, so other
    users of the model (a step judge on the same server) send ordinary chat requests.
    In-process engines continue a final assistant message by themselves and keep no body.
    """
    body = getattr(model, "extra_body", None)
    if not isinstance(body, dict):
        return model
    view = copy.copy(model)
    view.extra_body = {**body, **CONTINUE_FINAL_MESSAGE_BODY}  # type: ignore[attr-defined]
    return view


def check_step_model(model: object) -> Model:
    """``model`` if steps can be generated on it (any path); else a ``ConfigError``."""
    if not isinstance(model, Model):
        raise ConfigError(
            f"model must be a ttc Model (e.g. ttc.adapters.LlamaCpp), got {type(model).__name__}"
        )
    if not model.capabilities.completions and not model.capabilities.chat:
        raise ConfigError(f"{model.name} has neither a text nor a chat endpoint")
    if isinstance(getattr(model, "template", None), str):
        raise ConfigError(
            f"{model.name} wraps every prompt in its template, so it cannot continue a partial "
            "solution; build it with raw=True and pass the template to the strategy instead: "
            "StepFormat(template=ttc.adapters.gemma.GSM8K_FEW_SHOT)"
        )
    return model
