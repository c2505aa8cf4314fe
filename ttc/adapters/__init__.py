"""Adapters: one module a provider or engine; nothing else in ttc knows a wire format.

Every adapter is a ``ttc.Model``: the runtime (budgets, retries, rate limits, concurrency,
fan-out) comes with it. ``LiteLLM`` imports litellm only when it first sends a request.
"""

from ttc.adapters.cerebras import Cerebras
from ttc.adapters.function import FunctionModel
from ttc.adapters.groq import Groq
from ttc.adapters.litellm import LiteLLM
from ttc.adapters.llamacpp_server import LlamaCppServer
from ttc.adapters.openai import OpenAI
from ttc.adapters.openai_compatible import OpenAICompatible
from ttc.adapters.vllm_server import VLLMServer
from ttc.runtime.model import Capabilities, Model

__all__ = [
    "Capabilities",
    "Cerebras",
    "FunctionModel",
    "Groq",
    "LiteLLM",
    "LlamaCppServer",
    "Model",
    "OpenAI",
    "OpenAICompatible",
    "VLLMServer",
]
