"""How ``UnitTests`` isolates a candidate: bubblewrap where it works, else a limited process.

**bwrap**: mount, PID, network, IPC and UTS namespaces (and a user namespace when ttc is not
root); a read-only view of ``/usr``, ``/lib*``, ``/bin``, ``/sbin`` and the interpreter's own
install (its prefixes and site-packages, not what ``.pth`` files add); ``/proc``, a minimal
``/dev``, and one writable directory, a tmpfs of ``disk_mb`` at ``/tmp`` (plus one of the same
size at ``/dev/shm``, for multiprocessing's semaphores). bwrap dies with ttc,
and everything in the PID namespace dies with the runner.

**process** (the fallback): a session of its own, a temporary directory, network and PID
namespaces where the kernel allows them (the runner makes them); the disk watched by the parent.

Under both, when ttc runs as root the runner drops to a uid of its own (one per run, no
``/etc/passwd`` entry) before any candidate code runs, so ``RLIMIT_NPROC`` applies and the
candidate can neither read root's files nor signal ttc; in the fallback everything still
running under that uid after the run is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("ttc.unit_tests")

#: The candidate's uids when ttc runs as root: one per run, far from real users' and from the
#: usual subordinate-uid ranges of containers.
_UID_BASE = 1_900_000_000
_UID_SPAN = 100_000_000
#: Paths bound read-only when they exist (on merged-/usr systems most are links into /usr).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")

_lock = threading.Lock()
_uids_in_use: set[int] = set()
_probed: dict[tuple[str, int], Isolation] = {}


@dataclass(frozen=True)
class Isolation:
    """What a run goes through: ``prefix`` is the bwrap command before the interpreter."""

    kind: str  # "bwrap" or "process"
    prefix: tuple[str, ...] = ()
    why_not_bwrap: str = ""


def acquire_uid() -> int | None:
    """A fresh uid for one run when ttc is root (``None`` otherwise: the user's own)."""
    if os.geteuid() != 0:
        return None
    with _lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    if uid is not None:
        with _lock:
            _uids_in_use.discard(uid)


def _uid_processes(uid: int) -> bool:
    """Whether any process runs as ``uid``."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{name}").st_uid == uid:
                        return True
    return False


def kill_uid(uid: int, python: str) -> None:
    """SIGKILL every process running as ``uid`` (what escaped the run's session).

    ``kill(-1)`` from a process of that uid reaches them all at once; forks cannot slip through
    while the kernel walks the process list."""
    for _ in range(5):
        if not _uid_processes(uid):
            return
        kill = shutil.which("kill")
        command = [kill, "-9", "-1"] if kill else [python, "-S", "-c", "import os; os.kill(-1, 9)"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                command,
                user=uid,
                group=uid,
                extra_groups=[],
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
    logger.warning("UnitTests: processes of uid %d survived five kills", uid)


def _python_paths(python: str, env: dict[str, str]) -> list[str]:
    """The directories ``python`` needs: its prefixes, its binary's folder, site-packages."""
    probe = (
        "import json, os, site, sys\n"
        "paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,\n"
        "         os.path.dirname(os.path.realpath(sys.executable))]\n"
        "print(json.dumps(paths + site.getsitepackages()))\n"
    )
    out = subprocess.run(
        [python, "-s", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    paths: list[str] = json.loads(out)
    return [os.path.abspath(p) for p in paths if os.path.isdir(p)]


def _bwrap_prefix(bwrap: str, python: str, env: dict[str, str], disk_bytes: int) -> list[str]:
    root = os.geteuid() == 0
    args = [bwrap, "--die-with-parent", "--new-session"]
    if root:
        # No user namespace: as root, bwrap would map the sandbox's uid to root outside. The
        # runner keeps only what it needs to drop to the candidate's uid, then drops it.
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_CHOWN"]
    else:
        args += ["--unshare-all"]
    bound: list[str] = []
    for path in _SYSTEM:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
            bound.append(path)
    made: set[str] = set()
    for path in sorted(set(_python_paths(python, env))):
        if any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            continue
        # bwrap makes missing parents 0700: the candidate's uid could not walk through them.
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        args += ["--ro-bind", path, path]
        bound.append(path)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(disk_bytes), "--perms", "0700", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    # multiprocessing's semaphores live in /dev/shm: a second small tmpfs, open to the candidate.
    args += ["--size", str(disk_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    return args


def isolation(mode: str, python: str, env: dict[str, str], disk_bytes: int) -> Isolation:
    """The isolation for ``mode`` ("auto", "bwrap", "process"), probed once per interpreter.

    A bwrap that is missing or cannot make its namespaces (a container without the rights,
    user namespaces off) means the fallback under "auto"; under "bwrap" it is an error the
    caller raises (``why_not_bwrap``).
    """
    if mode == "process":
        return Isolation("process")
    key = (python, disk_bytes)
    with _lock:
        known = _probed.get(key)
    if known is None:
        known = _probe(python, env, disk_bytes)
        with _lock:
            _probed[key] = known
        if known.kind != "bwrap":
            logger.info(
                "UnitTests: bubblewrap unusable (%s); using the process sandbox",
                known.why_not_bwrap,
            )
    return known


def _probe(python: str, env: dict[str, str], disk_bytes: int) -> Isolation:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation("process", why_not_bwrap="bwrap is not installed")
    try:
        prefix = _bwrap_prefix(bwrap, python, env, disk_bytes)
        subprocess.run(
            [*prefix, python, "-S", "-c", "pass"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or b"").decode(errors="replace").strip() or f"status {exc.returncode}"
        return Isolation("process", why_not_bwrap=message)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Isolation("process", why_not_bwrap=repr(exc))
    return Isolation("bwrap", tuple(prefix))


def disk_usage(folder: str) -> int:
    """Bytes of disk used under ``folder`` (what the fallback's quota counts)."""
    total = 0
    for path, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_blocks * 512
    return total
