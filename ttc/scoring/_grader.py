"""The math grading worker: a process of its own, started by ``ttc.scoring._workers`` as
``python -c <this file's text>``, never through ``multiprocessing``, so the user's ``__main__``
is never imported (a script without an ``if __name__ == "__main__":`` guard is not re-run).

Standard library only at import. Protocol, one line each way: the worker first answers
``{"ready": true}`` (or ``{"error": "..."}`` when math-verify cannot be imported); then for each
request ``["gold", "prediction"]`` it answers ``1`` or ``0``. Argument 1 is the parent's
``sys.path`` as JSON, argument 2 the address-space limit in bytes.
"""

import sys

if sys.path and sys.path[0] == "":  # ``-c`` put the caller's working directory first
    del sys.path[0]


def _main() -> None:
    import json
    import logging
    import os

    sys.path[:] = json.loads(sys.argv[1])
    memory_bytes = int(sys.argv[2])
    # Our answers get their own copy of stdout; stray prints of sympy go to stderr instead.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" warnings
    try:
        from math_verify import parse, verify
    except BaseException as exc:  # reported to the parent, which raises
        error = json.dumps({"error": f"cannot import math_verify: {exc!r}"})
        answers.write(error.encode() + b"\n")
        return
    answers.write(b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        gold, pred = json.loads(line)
        # math-verify's own timeouts use signal.alarm; the parent kills a worker that overruns.
        try:
            gold_parsed = parse(gold, parsing_timeout=None)
            pred_parsed = parse(pred, parsing_timeout=None)
            verdict = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
        except Exception:  # an expression math-verify cannot handle is not a correct answer
            verdict = False
        answers.write(b"1\n" if verdict else b"0\n")


if __name__ == "__main__":
    _main()
