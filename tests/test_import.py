"""`import ttc` stays cheap: no heavy dependency at import, well under 0.3 s."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["litellm", "torch", "transformers", "vllm", "llama_cpp", "math_verify", "sympy"]


def _probe(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_import_ttc_loads_nothing_heavy() -> None:
    code = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        "import ttc\n"
        "dt = time.perf_counter() - t\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'seconds': dt, 'loaded': loaded}))"
    )
    result = _probe(code)
    assert result["loaded"] == []
    assert isinstance(result["seconds"], float) and result["seconds"] < 0.3


def test_public_api_and_adapters_load_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "from ttc import BestOfN, RepeatedSample, SelfConsistency, Budget, Result, pass_at_k\n"
        "from ttc.adapters import OpenAI, Groq, Cerebras, LiteLLM, VLLMServer, LlamaCppServer\n"
        "from ttc.scoring import MathAnswer, MajorityVote, UnitTests\n"
        f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert _probe(code)["loaded"] == []
