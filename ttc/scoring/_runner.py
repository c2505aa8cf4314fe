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
"""

import sys


def _main() -> None:
    import json
    import os

    channel = int(sys.argv[1])
    write, read = os.write, os.read
    pending = bytearray()

    def send(text: str) -> None:
        write(channel, (text + "\n").encode())

    def receive() -> dict[str, object]:
        while b"\n" not in pending:
            chunk = read(channel, 1 << 16)
            if not chunk:
                os._exit(87)  # the parent went away
            pending.extend(chunk)
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    config = receive()
    net = False
    if config["unshare_net"]:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            # As root CLONE_NEWNET alone works (before dropping to the candidate's uid);
            # otherwise CLONE_NEWUSER | CLONE_NEWNET where unprivileged user namespaces are on.
            for flags in (0x40000000, 0x10000000 | 0x40000000):
                if libc.unshare(flags) == 0:
                    net = True
                    break
        except Exception:
            pass
    else:
        net = True  # bubblewrap made the namespace
    try:
        uid = config["uid"]
        if isinstance(uid, int):
            os.chown(".", uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        library = os.path.dirname(os.__file__)
        if not os.access(library, os.R_OK | os.X_OK):
            raise PermissionError(f"the candidate's user cannot read Python's library {library}")
        try:
            import ctypes

            # PR_SET_NO_NEW_PRIVS: no set-uid program can give the candidate its privileges back.
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
        code = config["code"]
        assert isinstance(code, str)
        with open("solution.py", "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
    except Exception as exc:
        os.write(2, f"ttc sandbox: cannot set up the sandbox: {exc!r}\n".encode())
        os._exit(86)
    os.set_inheritable(channel, False)  # not passed on to what the candidate runs
    send(f"ready {int(net)}")

    import builtins
    import types

    def excepthook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        import traceback  # prints the tests' lines, which exist only in linecache

        traceback.print_exception(kind, value, tb)  # type: ignore[arg-type]

    sys.excepthook = excepthook

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main  # unittest.main() looks for the tests there
    sys.argv = ["tests.py"]
    import solution  # the candidate's code runs here

    solution_file = solution.__file__
    main.__dict__.update({k: v for k, v in vars(solution).items() if not k.startswith("__")})
    del solution
    send("loaded")

    request = receive()
    nonce, tests, entry_point = request["nonce"], request["tests"], request["entry_point"]
    assert isinstance(nonce, str) and isinstance(tests, str)
    import __future__

    import ast
    import linecache

    linecache.cache["tests.py"] = (len(tests), None, tests.splitlines(True), "tests.py")
    tree = ast.parse(tests, "tests.py")
    flags = 0
    for node in tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            break
        for alias in node.names:
            flags |= getattr(__future__, alias.name).compiler_flag
    steps = [
        compile(ast.Module(body=[node], type_ignores=[]), "tests.py", "exec", flags, True)
        for node in tree.body
    ]
    if isinstance(entry_point, str):
        main.__dict__["candidate"] = eval(entry_point, main.__dict__)
        steps.append(
            compile(
                'if callable(globals().get("check")):\n    check(candidate)\n', "<check>", "exec"
            )
        )
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


if __name__ == "__main__":
    _main()
