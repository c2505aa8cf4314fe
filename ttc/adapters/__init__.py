"""Adapters: one module a provider or engine; nothing else in ttc knows a wire format.

Every adapter is a ``ttc.Model``: the runtime (budgets, retries, rate limits, concurrency,
fan-out) comes with it. Names load on first use, so ``import ttc.adapters`` imports no adapter
(nor aiohttp); ``LiteLLM`` imports litellm only when it first sends a request; ``LlamaCpp``
imports llama_cpp only when it loads its model; ``VLLM``, ``launch_vllm_server`` and
``Transformers`` import vllm, torch and transformers only when they load.
``resolve_model(name)`` picks an adapter from a name such as ``"embedded"`` or
``"groq/llama-3.1-8b-instant"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.adapters.openai": ("OpenAI",),
        "ttc.adapters.groq": ("Groq",),
        "ttc.adapters.cerebras": ("Cerebras",),
        "ttc.adapters.vllm_server": ("VLLMServer",),
        "ttc.adapters.llamacpp_server": ("LlamaCppServer",),
        "ttc.adapters.openai_compatible": ("OpenAICompatible",),
        "ttc.adapters.litellm": ("LiteLLM",),
        "ttc.adapters.llamacpp": ("LlamaCpp",),
        "ttc.adapters.vllm_engine": ("VLLM", "launch_vllm_server"),
        "ttc.adapters.hf": ("Transformers",),
        "ttc.adapters.function": ("FunctionModel",),
        "ttc.adapters.registry": ("resolve_model",),
    },
)

if TYPE_CHECKING:
    from ttc.adapters.cerebras import Cerebras as Cerebras
    from ttc.adapters.function import FunctionModel as FunctionModel
    from ttc.adapters.groq import Groq as Groq
    from ttc.adapters.hf import Transformers as Transformers
    from ttc.adapters.litellm import LiteLLM as LiteLLM
    from ttc.adapters.llamacpp import LlamaCpp as LlamaCpp
    from ttc.adapters.llamacpp_server import LlamaCppServer as LlamaCppServer
    from ttc.adapters.openai import OpenAI as OpenAI
    from ttc.adapters.openai_compatible import OpenAICompatible as OpenAICompatible
    from ttc.adapters.registry import resolve_model as resolve_model
    from ttc.adapters.vllm_engine import VLLM as VLLM
    from ttc.adapters.vllm_engine import launch_vllm_server as launch_vllm_server
    from ttc.adapters.vllm_server import VLLMServer as VLLMServer
