"""The test runner inside ``UnitTests``' sandbox, run as ``python -s -B -c <this file's text> FD``.

Standard library only. It talks to the parent over the socket ``FD`` (one JSON or text line per
message) and never puts anything on disk the candidate could use to forge a verdict:

1. parent -> runner: ``{"uid", "limits", "unshare_net", "code"}``. The runner (re)sets what it
   must while still privileged (network namespace in the fallback, the candidate's uid when
   started as root), applies the resource limits, writes ``solution.py`` and says
   ``ready <net>``; a limit it cannot apply ends it with status 86 before any candidate code.
2. The runner imports the candidate's code, then says ``loaded``.
3. parent -> runner: ``{"nonce", "tests", "entry_point"}``, sent only now, so code that runs at
   import time can read neither the tests nor the nonce from anywhere.
4. The runner executes the tests one top-level statement at a time (then ``check(candidate)``
   with an entry point), answering ``ok <nonce> <i>`` after each, and ``done <nonce> <n>`` at
   the end, then leaves at once with ``os._exit(0)``.

The parent counts a pass only for exactly that sequence, every statement answered, and exit
status 0. Candidate code runs in this interpreter, so code written to attack the runner from
inside (reading its memory, writing its socket) could still forge the sequence; the sandbox
keeps that from mattering anywhere else.

With ``"mode": "commands"`` in the first message (the proof and SMT checkers), the runner
imports nothing: after ``ready`` it runs the programs the parent sends one at a time and answers
each with its exit status and output (``_commands``). The channel is not inherited by them.
"""

import sys


def _main() -> None:
    import marshal  # built in: no import time, unlike json
    import os

    channel = int(sys.argv[1])
    write, read = os.write, os.read
    pending = bytearray()

    def send(text: str) -> None:
        write(channel, (text + "\n").encode())

    def receive() -> dict[str, object]:
        """One message: its length in ASCII digits, a newline, then that many marshal bytes."""
        size = -1
        while size < 0 or len(pending) < size:
            if size < 0 and b"\n" in pending:
                head, _, rest = bytes(pending).partition(b"\n")
                size = int(head)
                pending[:] = rest
                continue
            chunk = read(channel, 1 << 16)
            if not chunk:
                os._exit(87)  # the parent went away
            pending.extend(chunk)
        message = marshal.loads(bytes(pending[:size]))
        del pending[:size]
        assert isinstance(message, dict)
        return message

    config = receive()
    net = pids = not config["unshare_net"]  # else bubblewrap made the namespaces
    if config["unshare_net"]:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            # As root CLONE_NEWNET | CLONE_NEWPID work (before dropping to the candidate's uid);
            # otherwise with CLONE_NEWUSER where unprivileged user namespaces are on.
            newuser, newnet, newpid = 0x10000000, 0x40000000, 0x20000000
            for flags in (
                newnet | newpid,
                newuser | newnet | newpid,
                newnet,
                newuser | newnet,
            ):
                if libc.unshare(flags) == 0:
                    net, pids = True, bool(flags & newpid)
                    break
        except Exception:
            pass
        if pids:
            # The next child is the first process of the new PID namespace: the runner goes on
            # there, and when it ends the kernel kills everything the candidate left, even in
            # a session of its own. This process only passes its exit status on.
            child = os.fork()
            if child:
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
                os._exit(code if code >= 0 else 128 - code)
            libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL if ttc kills the outer one
    try:
        uid = config["uid"]
        if isinstance(uid, int):
            os.chown(".", uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        library = os.path.dirname(os.__file__)
        if not os.access(library, os.R_OK | os.X_OK):
            raise PermissionError(
                f"uid {uid} cannot read Python's library {library}: as root, candidates run "
                "as a uid of their own; install bubblewrap, or pass the verifier python= an "
                "interpreter every user can read"
            )
        if config["no_new_privs"]:  # bubblewrap sets it itself
            try:
                import ctypes

                # PR_SET_NO_NEW_PRIVS: no set-uid program gives the candidate privileges back.
                ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)
            except Exception:
                pass
        import resource

        limits = config["limits"]
        assert isinstance(limits, list)
        for name, value in limits:
            which = getattr(resource, name)
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        files = config.get("files")
        if files is None:
            files = {"solution.py": config["code"]}
        assert isinstance(files, dict)
        for name, text in files.items():
            with open(name, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(text)
    except Exception as exc:
        os.write(2, f"ttc sandbox: cannot set up the sandbox: {exc!r}\n".encode())
        os._exit(86)
    os.set_inheritable(channel, False)  # not passed on to what the candidate runs
    send(f"ready {int(net)}{int(pids)}")
    if config.get("mode") == "commands":
        _commands(receive, channel)

    import builtins
    import types
    from types import TracebackType

    tests_text: list[str] = []

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        import linecache
        import traceback

        if tests_text:  # the tests exist only here, not on disk: show their lines
            text = tests_text[0]
            linecache.cache["tests.py"] = (len(text), None, text.splitlines(True), "tests.py")
        traceback.print_exception(kind, value, tb)

    sys.excepthook = excepthook

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main  # unittest.main() looks for the tests there
    sys.argv = ["tests.py"]
    import solution  # type: ignore[import-not-found]  # the candidate's code runs here

    solution_file = solution.__file__
    main.__dict__.update({k: v for k, v in vars(solution).items() if not k.startswith("__")})
    del solution
    send("loaded")

    request = receive()
    nonce, tests, sources = request["nonce"], request["tests"], request["steps"]
    assert isinstance(nonce, str) and isinstance(tests, str) and isinstance(sources, list)
    tests_text.append(tests)
    future_flags = request["flags"]
    assert isinstance(future_flags, int)
    # Each top-level statement of the tests, split by the parent, padded to its own lines.
    steps = [compile(source, name, "exec", future_flags, True) for name, source in sources]
    entry_point = request["entry_point"]
    if isinstance(entry_point, str):
        main.__dict__["candidate"] = eval(entry_point, main.__dict__)
    for i, step in enumerate(steps):
        try:
            exec(step, main.__dict__)
        except SystemExit as exc:
            # unittest.main() ends the tests with SystemExit(0): that is the end of this step.
            # The candidate's own code calling sys.exit(0) in the middle of the tests is not.
            tb = exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == solution_file:
                    raise
                tb = tb.tb_next
            if exc.code not in (None, 0):
                raise
            send(f"ok {nonce} {i}")
            send(f"done {nonce} {i + 1}")
            break
        send(f"ok {nonce} {i}")
    else:
        send(f"done {nonce} {len(steps)}")
    # The tests ran to their end: leave at once, so that nothing the candidate left behind
    # (exit handlers, threads) can change the outcome.
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib is one import more before every run
            stream.flush()
        except Exception:
            pass
    os._exit(0)


def _commands(receive: "object", channel: int) -> None:
    """The checkers' mode (``CoqProof``, ``LeanProof``, ``SMTCheck``): run programs, not code.

    Each request ``{"files", "argv", "cap"}`` writes its files (sent only now: a later step's
    files, such as a checker's nonce-named check, exist nowhere while an earlier step runs),
    runs ``argv`` with stdout and stderr in one pipe, and answers ``out <i> <status> <n>``
    followed by the last ``n`` bytes of that output; an empty request ends the run.
    """
    import os
    import subprocess

    i = 0
    while True:
        request = receive()  # type: ignore[operator]
        argv = request.get("argv")
        if not argv:
            os._exit(0)
        for name, text in request["files"].items():
            with open(name, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(text)
        cap = request["cap"]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        tail = bytearray()
        while True:
            chunk = os.read(process.stdout.fileno(), 1 << 16)  # type: ignore[union-attr]
            if not chunk:
                break
            tail += chunk
            if len(tail) > 2 * cap:
                del tail[: len(tail) - cap]
        status = process.wait()
        data = bytes(tail[-cap:]) if cap else b""
        os.write(channel, f"out {i} {status} {len(data)}\n".encode())
        view = memoryview(data)
        while view:
            view = view[os.write(channel, view) :]
        i += 1


if __name__ == "__main__":
    _main()
