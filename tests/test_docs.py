"""The docs cannot drift from the code: every ```python block in docs/ runs here.

Each page's blocks run in order in one namespace (a later block may use an earlier block's
names), top-level ``await`` included, against loopback fake providers: the hosted presets'
default base URLs point at ``ttc.testing.FakeProvider`` servers (one per flavor, in a
background thread) and fake API keys are set in the environment, so the examples read exactly
like user code.

Markers, on the line just before a block's opening fence:

- ``<!-- skip -->``: never run (only for what cannot run here at all);
- ``<!-- needs: llama_cpp -->``: run only where the named modules are importable.

Also here: every public name of the modules in the API reference has a docstring.

Run one page by hand with ``python tests/test_docs.py docs/budgets.md``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_MARKER = re.compile(r"<!--\s*(?P<kind>skip|needs:)\s*(?P<arg>[\w., ]*?)\s*-->\s*$")

#: Fake API keys the examples' environment gets; the fake servers demand them.
KEYS = {
    "openai": ("OPENAI_API_KEY", "sk-docs-openai"),
    "groq": ("GROQ_API_KEY", "gsk-docs-groq"),
    "cerebras": ("CEREBRAS_API_KEY", "csk-docs-cerebras"),
}
#: Which preset's ``default_base_url`` each fake flavor stands in for.
PRESETS = {
    "openai": "ttc.adapters.openai:OpenAI",
    "groq": "ttc.adapters.groq:Groq",
    "cerebras": "ttc.adapters.cerebras:Cerebras",
    "vllm": "ttc.adapters.vllm_server:VLLMServer",
    "llamacpp": "ttc.adapters.llamacpp_server:LlamaCppServer",
}
#: litellm's own base-URL variables, so that LiteLLM examples reach the fakes too.
LITELLM_BASES = {"groq": "GROQ_API_BASE", "cerebras": "CEREBRAS_API_BASE"}
#: The modules the API reference renders; their public names must have docstrings.
API_MODULES = (
    "ttc",
    "ttc.adapters",
    "ttc.strategies",
    "ttc.scoring",
    "ttc.runtime",
    "ttc.eval",
    "ttc.testing",
    "ttc.errors",
)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    skip: bool
    needs: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


def collect(path: Path) -> list[Block]:
    """The ```python blocks of a page, with the marker on the line before each, if any."""
    text = path.read_text(encoding="utf-8")
    page = path.relative_to(DOCS).as_posix()
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("lang") not in ("python", "py"):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        marker = _MARKER.search(before)
        skip = marker is not None and marker.group("kind") == "skip"
        needs: tuple[str, ...] = ()
        if marker is not None and marker.group("kind") == "needs:":
            needs = tuple(n.strip() for n in marker.group("arg").split(",") if n.strip())
        indent = match.group("indent")
        body = textwrap.dedent(match.group("body")) if indent else match.group("body")
        line = text.count("\n", 0, match.start()) + 2  # the block's first line of code
        blocks.append(Block(page, line, body, skip, needs))
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if any(not b.skip for b in collect(p)))


# --------------------------------------------------------------------------------------------
# The fake providers, in a thread of their own so that synchronous examples (``run_sync``,
# ``asyncio.run``) can block the main thread without blocking the servers.


class FakeWorld:
    """One ``FakeProvider`` per flavor, served from a background event loop."""

    def __init__(self) -> None:
        from ttc.testing import FakeProvider

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="docs-fakes", daemon=True)
        self.thread.start()
        self.servers = {
            flavor: FakeProvider(flavor, api_key=KEYS[flavor][1] if flavor in KEYS else None)  # type: ignore[arg-type]
            for flavor in PRESETS
        }
        for server in self.servers.values():
            self._call(server.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        for server in self.servers.values():
            self._call(server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def fake_world() -> Iterator[FakeWorld]:
    """The fakes, with the presets and litellm pointed at them and fake keys set."""
    fakes = FakeWorld()
    with pytest.MonkeyPatch.context() as mp:
        for flavor, target in PRESETS.items():
            module, name = target.split(":")
            cls = getattr(importlib.import_module(module), name)
            mp.setattr(cls, "default_base_url", fakes.servers[flavor].base_url)
        for variable, key in KEYS.values():
            mp.setenv(variable, key)
        for flavor, variable in LITELLM_BASES.items():
            mp.setenv(variable, fakes.servers[flavor].base_url)
        mp.setenv("OPENAI_BASE_URL", fakes.servers["openai"].base_url)
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            yield fakes
        finally:
            fakes.close()


@pytest.fixture(scope="module")
def world() -> Iterator[FakeWorld]:
    with fake_world() as fakes:
        yield fakes


# --------------------------------------------------------------------------------------------
# Running a page


def run_page(path: Path) -> list[str]:
    """Run the page's blocks in order in one namespace; return the skipped blocks' places."""
    from ttc.runtime import pricing
    from ttc.runtime.model import Model

    prices = dict(pricing._overrides)  # register_price() on one page must not leak to the next
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    loop = asyncio.new_event_loop()
    skipped = []
    # Keep every model the page builds (names get rebound) so that its connections are closed.
    models: list[Model] = []
    init = Model.__init__

    def keep(self: Model, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        models.append(self)

    Model.__init__ = keep  # type: ignore[method-assign]
    try:
        for block in collect(path):
            where = f"docs/{block.page}:{block.line}"
            if block.skip or block.missing:
                skipped.append(f"{where} ({'skip' if block.skip else ', '.join(block.missing)})")
                continue
            code = compile(block.code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if code.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(code, namespace))
            else:
                exec(code, namespace)
        for model in models:
            loop.run_until_complete(model.aclose())
    finally:
        Model.__init__ = init  # type: ignore[method-assign]
        pricing._overrides.clear()
        pricing._overrides.update(prices)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return skipped


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(
    path: Path, world: FakeWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files (results folders) write here
    start = time.perf_counter()
    skipped = run_page(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"{path.name}: examples took {elapsed:.1f} s; keep them small"
    if skipped:
        print("skipped:", *skipped, sep="\n  ")


def test_markers_are_rare_and_well_formed() -> None:
    """A typo in a marker would silently run (or skip) a block; skips must stay rare."""
    total = skips = 0
    for path in DOCS.rglob("*.md"):
        text = path.read_text(encoding="utf-8")
        for comment in re.findall(r"<!--.*?-->", text):
            if re.search(r"\b(skip|needs)\b", comment):
                assert _MARKER.search(comment), f"{path.name}: malformed marker {comment!r}"
        blocks = collect(path)
        total += len(blocks)
        skips += sum(b.skip for b in blocks)
    assert total >= 20
    assert skips <= max(3, total // 10), f"{skips} of {total} blocks skipped"


# --------------------------------------------------------------------------------------------
# Docstrings


def _undocumented() -> list[str]:
    missing: list[str] = []
    seen: set[int] = set()
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
            if not (own or "").strip():
                missing.append(f"{module_name}.{name}")
            if not inspect.isclass(obj):
                continue
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = (
                    value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                )
                if not inspect.isfunction(fn) or (fn.__doc__ or "").strip():
                    continue
                # An override without a docstring inherits its base's in the reference.
                if any(attr in vars(base) for base in obj.__mro__[1:]):
                    continue
                missing.append(f"{module_name}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    assert _undocumented() == []


if __name__ == "__main__":  # pragma: no cover - pages by hand: python tests/test_docs.py [PAGE...]
    with fake_world():
        for arg in sys.argv[1:] or [str(p) for p in pages()]:
            t0 = time.perf_counter()
            left_out = run_page(Path(arg).resolve())
            print(f"{arg}: ok in {time.perf_counter() - t0:.1f} s", *left_out, sep="\n  ")
