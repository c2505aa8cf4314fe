"""``SMTCheck``'s solver process, run in the sandbox as ``python -s -c <this file's text>``.

It reads ``job.json``: ``{"solver": "z3" | "cvc5", "timeout_ms", "proofs", "queries"}``, each
query ``{"text", "values"}`` (SMT-LIB commands ending in ``(check-sat)``, and the symbols whose
values to report when satisfiable), and writes one line ``ttc-smt-results <json>``: per query
``{"status": "sat" | "unsat" | "unknown" | "error", "output", "values", "proof", "error"}``.
With ``proofs`` every ``unsat`` comes with the solver's proof (cvc5 also checks it itself,
``check-proofs``); a proof the solver cannot give turns the status into ``"error"``.
"""

import json
import sys

_STATUSES = ("sat", "unsat", "unknown")
#: Characters kept of each text in a result.
_KEEP = 4000


def _status(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip() in _STATUSES]
    return lines[-1] if lines else "error"


def _z3(query: dict, job: dict) -> dict:  # type: ignore[type-arg]
    import z3

    ctx = z3.Context()

    def run(text: str) -> tuple[str, str]:
        try:
            return z3.Z3_eval_smtlib2_string(ctx.ref(), text), ""
        except z3.Z3Exception as exc:
            value = exc.value
            return "", value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    options = f"(set-option :timeout {job['timeout_ms']})(set-option :produce-models true)"
    if job["proofs"]:
        options = "(set-option :produce-proofs true)" + options
    output, error = run(options + query["text"])
    result = {"status": _status(output) if not error else "error", "output": output}
    result["error"] = error
    if result["status"] == "sat" and query["values"]:
        result["values"], result["error"] = run(f"(get-value ({' '.join(query['values'])}))")
    if result["status"] == "unsat" and job["proofs"]:
        result["proof"], error = run("(get-proof)")
        if error or not result["proof"].strip():
            result["status"], result["error"] = "error", f"no proof of unsat: {error}"
    return result


def _cvc5(query: dict, job: dict) -> dict:  # type: ignore[type-arg]
    import cvc5

    manager = cvc5.TermManager()
    solver = cvc5.Solver(manager)
    solver.setOption("produce-models", "true")
    solver.setOption("tlimit-per", str(job["timeout_ms"]))
    if job["proofs"]:
        solver.setOption("produce-proofs", "true")
        solver.setOption("check-proofs", "true")
    parser = cvc5.InputParser(solver)
    follow = ""
    if query["values"]:
        follow += f"(get-value ({' '.join(query['values'])}))"
    if job["proofs"]:
        follow += "(get-proof)"
    parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, query["text"] + follow, "problem")
    symbols = parser.getSymbolManager()
    result = {"status": "error", "output": "", "values": "", "proof": "", "error": ""}
    output: list[str] = []
    while True:
        try:
            command = parser.nextCommand()
            if command.isNull():
                break
            text = str(command)
            if text.startswith("(get-value") and result["status"] != "sat":
                continue
            if text.startswith("(get-proof") and result["status"] != "unsat":
                continue
            answer = command.invoke(solver, symbols)
        except Exception as exc:  # a parse or solver error: the rest cannot run
            result["error"] = str(exc)
            if result["status"] == "unsat" and job["proofs"]:
                result["status"] = "error"
            break
        if answer.startswith("(error"):
            result["error"] = answer.strip()
            break
        if text.startswith("(check-sat"):
            result["status"] = _status(answer)
        elif text.startswith("(get-value"):
            result["values"] = answer
        elif text.startswith("(get-proof"):
            result["proof"] = answer
        output.append(answer)
    result["output"] = "".join(output)
    if result["status"] == "unsat" and job["proofs"] and not str(result["proof"]).strip():
        result["status"] = "error"
        result["error"] = result["error"] or "no proof of unsat"
    return result


def _main() -> None:
    with open("job.json", encoding="utf-8") as f:
        job = json.load(f)
    run = _z3 if job["solver"] == "z3" else _cvc5
    results = []
    for query in job["queries"]:
        try:
            results.append(run(query, job))
        except Exception as exc:
            results.append({"status": "error", "error": f"{type(exc).__name__}: {exc}"})
    for result in results:  # the line must fit in what comes back: proofs can be huge
        for key in ("output", "proof", "values", "error"):
            result[key] = str(result.get(key) or "")[:_KEEP]
    sys.stdout.write("\nttc-smt-results " + json.dumps(results) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
