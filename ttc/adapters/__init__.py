"""Adapters: one module a provider or engine; nothing else in ttc knows a wire format.

Every adapter is a ``ttc.Model``: the runtime (budgets, retries, rate limits, concurrency,
fan-out) comes with it. ``LiteLLM`` imports litellm only when it first sends a request;
``LlamaCpp`` imports llama_cpp only when it loads its model; ``VLLM``, ``launch_vllm_server``
and ``Transformers`` import vllm, torch and transformers only when they load.
``resolve_model(name)`` picks an adapter from a name such as ``"embedded"`` or
``"groq/llama-3.1-8b-instant"``.
"""

from ttc.adapters.cerebras import Cerebras
from ttc.adapters.function import FunctionModel
from ttc.adapters.groq import Groq
from ttc.adapters.hf import Transformers
from ttc.adapters.litellm import LiteLLM
from ttc.adapters.llamacpp import LlamaCpp
from ttc.adapters.llamacpp_server import LlamaCppServer
from ttc.adapters.openai import OpenAI
from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.adapters.registry import resolve_model
from ttc.adapters.vllm_engine import VLLM, launch_vllm_server
from ttc.adapters.vllm_server import VLLMServer
from ttc.runtime.model import Capabilities, Model

__all__ = [
    "VLLM",
    "Capabilities",
    "Cerebras",
    "FunctionModel",
    "Groq",
    "LiteLLM",
    "LlamaCpp",
    "LlamaCppServer",
    "Model",
    "OpenAI",
    "OpenAICompatible",
    "Transformers",
    "VLLMServer",
    "launch_vllm_server",
    "resolve_model",
]
