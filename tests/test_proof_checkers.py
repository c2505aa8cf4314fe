"""CoqProof (the real coqc), SMTCheck (the real z3 and cvc5) and LeanProof (recorded outputs of
real Lean 4 runs: no Lean toolchain can be installed here), in UnitTests' sandbox."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import anyio
import lean_fixtures as lf
import pytest

from ttc.errors import ConfigError
from ttc.eval.datasets import Example, load_dataset
from ttc.scoring import CoqProof, LeanProof, SMTCheck
from ttc.scoring._sandbox import StepResult
from ttc.scoring.lean import parse_axioms, parse_messages
from ttc.types import Candidate

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")
needs_coq = pytest.mark.skipif(shutil.which("coqc") is None, reason="coqc not installed")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_z3 = pytest.mark.skipif(not _has("z3"), reason="z3-solver not installed")
needs_cvc5 = pytest.mark.skipif(not _has("cvc5"), reason="cvc5 not installed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def cands(*texts: str) -> list[Candidate]:
    return [Candidate(text=t) for t in texts]


# --------------------------------------------------------------------------------------------
# CoqProof on the real coqc.

ADD_ZERO = "forall n : nat, n + 0 = n"


def coq(**kwargs: object) -> CoqProof:
    kwargs.setdefault("preamble", "Require Import Arith Lia.")
    return CoqProof(ADD_ZERO, **kwargs)  # type: ignore[arg-type]


@needs_coq
@pytest.mark.anyio
async def test_coq_accepts_a_proof_and_a_whole_file() -> None:
    verifier = coq()
    candidates = cands(
        "```coq\nProof.\n  intros n. lia.\nQed.\n```",
        "intros n. induction n; simpl; auto. Qed.",
        "Lemma helper : forall m, m + 0 = m. Proof. intros. lia. Qed.\n"
        "Theorem theorem : forall n : nat, n + 0 = n.\nProof. exact helper. Qed.",
    )
    assert await verifier.verify("q", candidates) == [True, True, True]
    assert [c.failure for c in candidates] == [None, None, None]
    assert all(r.isolation in ("bwrap", "process") for r in verifier.last_reports)
    assert all(r.network_isolated for r in verifier.last_reports)


@needs_coq
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("Proof. Admitted.", "not finished (Admitted)"),
        ("Proof. intros n. admit. Qed.", "given up goals"),
        ("Proof. intros n. admit. Admitted.", "not finished (Admitted)"),
        (
            "Axiom cheat : forall n : nat, n + 0 = n.\n"
            "Theorem theorem : forall n : nat, n + 0 = n.\nProof. exact cheat. Qed.",
            "relies on assumptions: Candidate.cheat",
        ),
        (
            "Parameter cheat : False.\n"
            "Theorem theorem : forall n : nat, n + 0 = n.\nProof. destruct cheat. Qed.",
            "relies on assumptions: Candidate.cheat",
        ),
        (
            "Hypothesis cheat : False.\n"
            "Theorem theorem : forall n : nat, n + 0 = n.\nProof. destruct cheat. Qed.",
            "relies on assumptions: Candidate.cheat",
        ),
        (  # the candidate proves something else under the theorem's name
            "Theorem theorem : forall n : nat, 0 + n = n.\nProof. reflexivity. Qed.",
            "does not have the statement asked",
        ),
        (  # a convertible statement is still a different one
            "Theorem theorem : forall n : nat, n + 0 = n + 0.\nProof. reflexivity. Qed.",
            "does not have the statement asked",
        ),
        ("Proof. intros n. (* lia. Qed. *)", "pending proofs"),
        (
            "Unset Guard Checking.\nFixpoint loop (n : nat) : False := loop n.\n"
            "Theorem theorem : forall n : nat, n + 0 = n.\nProof. destruct (loop 0). Qed.",
            "assumed to be guarded",
        ),
        (
            "Unset Positivity Checking.\nInductive bad : Type := mk : (bad -> False) -> bad.\n"
            "Definition app (b : bad) : bad -> False := match b with mk f => f end.\n"
            "Theorem theorem : forall n : nat, n + 0 = n.\n"
            "Proof. destruct (let d := mk (fun b => app b b) in app d d). Qed.",
            "assumed to be positive",
        ),
        (
            "Module M.\nTheorem theorem : forall n : nat, n + 0 = n.\nProof. lia. Qed.\nEnd M.",
            "does not define theorem",
        ),
    ],
    ids=[
        "admitted",
        "admit-qed",
        "admit-admitted",
        "axiom",
        "parameter",
        "hypothesis",
        "changed-statement",
        "convertible-statement",
        "qed-in-comment",
        "guard-checking-off",
        "positivity-checking-off",
        "other-name",
    ],
)
async def test_coq_refuses_each_cheat(script: str, reason: str) -> None:
    verifier = coq()
    candidate = Candidate(text=script)
    assert await verifier.verify("q", [candidate]) == [False]
    assert candidate.failure is not None and reason in candidate.failure, candidate.failure
    assert len(candidate.failure) <= 500


@needs_coq
@pytest.mark.anyio
async def test_coq_verdict_comes_from_the_check_not_from_what_the_proof_prints() -> None:
    forged = (
        'Proof. idtac "Closed under the global context". Admitted.\n'
        'Goal True. idtac "Closed under the global context". exact I. Qed.'
    )
    assert await coq().verify("q", cands(forged)) == [False]


@needs_coq
@pytest.mark.anyio
async def test_coq_a_looping_tactic_times_out() -> None:
    verifier = coq(timeout=3)
    # A recursive Ltac loop overflows Coq's stack in about 2 s on a fast machine, which is a
    # rejection, not a timeout; a billion iterations run in constant memory for minutes.
    candidate = Candidate(
        text="Theorem theorem : forall n : nat, n + 0 = n.\nProof. do 1000000000 idtac. Qed."
    )
    assert await verifier.verify("q", [candidate]) == [False]
    assert verifier.last_reports[0].timed_out
    assert candidate.failure == "timed out after 3 s"


@needs_coq
@pytest.mark.anyio
async def test_coq_allowed_axioms_are_checked_by_name_not_by_spelling() -> None:
    statement = "forall P : Prop, P \\/ ~ P"
    classic = "Require Import Classical.\nProof. exact classic. Qed."
    fake = (
        "Module Classical_Prop. Axiom classic : forall P : Prop, P \\/ ~ P. End Classical_Prop.\n"
        "Theorem theorem : forall P : Prop, P \\/ ~ P.\nProof. exact Classical_Prop.classic. Qed."
    )
    strict = CoqProof(statement)
    assert await strict.verify("q", cands(classic)) == [False]
    assert "Classical_Prop.classic" in (strict.last_reports[0].reason or "")
    allowing = CoqProof(statement, allowed_axioms=["Coq.Logic.Classical_Prop.classic"])
    assert await allowing.verify("q", cands(classic, fake)) == [True, False]
    assert "Candidate.Classical_Prop.classic" in allowing.last_reports[1].reason


@needs_coq
@pytest.mark.anyio
async def test_coq_the_sandbox_holds(tmp_path: Path) -> None:
    """The proof's ``Redirect`` writes files: never outside its own directory."""
    target = tmp_path / "escaped"
    script = f'Redirect "{target}" Print nat.\nProof. intros n. lia. Qed.'
    verifier = coq()
    await verifier.verify("q", cands(script))
    assert _files(tmp_path) == []


@needs_coq
@pytest.mark.skipif(
    os.geteuid() == 0 and not os.access("/usr/bin/python3", os.X_OK),
    reason="as root the fallback needs an interpreter every uid can read",
)
@pytest.mark.anyio
async def test_coq_runs_in_the_process_fallback_too() -> None:
    # As root the candidate's uid cannot read a Python under /root: the system's can.
    python = "/usr/bin/python3" if os.geteuid() == 0 else sys.executable
    verifier = coq(isolation="process", python=python)
    assert await verifier.verify("q", cands("intros n. lia. Qed.", "Admitted.")) == [True, False]
    assert [r.isolation for r in verifier.last_reports] == ["process", "process"]
    assert "Admitted" in verifier.last_reports[1].reason


@needs_coq
@pytest.mark.anyio
async def test_coq_batches_identical_scripts_and_caches_verdicts() -> None:
    verifier = coq()
    good = "Proof. intros n. lia. Qed."
    assert await verifier.verify("q", cands(good, good, "Proof. Admitted.")) == [
        True,
        True,
        False,
    ]
    assert [r.cached for r in verifier.last_reports] == [False, False, False]
    assert verifier.last_reports[0] is verifier.last_reports[1]  # checked once
    assert await verifier.verify("q", cands(good)) == [True]
    assert verifier.last_reports[0].cached


@needs_coq
@pytest.mark.slow
@pytest.mark.anyio
async def test_every_coq_sample_has_a_proof_coqc_accepts() -> None:
    data = load_dataset("coq-sample")
    assert len(data) == 12
    rows = [json.loads(line) for line in data.path.read_text().splitlines()]
    verdicts: dict[str, bool] = {}

    async def check(example: Example, row: dict[str, str]) -> None:
        verifier = data.verifier(example)
        assert isinstance(verifier, CoqProof)
        assert verifier.name == row["name"] and example.header == row["preamble"]
        [verdicts[example.id]] = await verifier.verify(example.question, cands(row["proof"]))

    async with anyio.create_task_group() as tg:
        for example, row in zip(data, rows, strict=True):
            tg.start_soon(check, example, row)
    assert verdicts == {e.id: True for e in data}
    assert data.spec.extractor()(rows[0]["proof"]) is None  # the checker reads the whole text


def test_coq_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="statement"):
        CoqProof("")
    with pytest.raises(ConfigError, match="not a command"):
        CoqProof("Theorem t : True.")
    with pytest.raises(ConfigError, match="name"):
        CoqProof("True", name="not an ident")
    with pytest.raises(ConfigError, match="coqc"):
        CoqProof("True", coqc="/no/such/coqc")
    with pytest.raises(ConfigError, match="allowed_axioms"):
        CoqProof("True", allowed_axioms="classic")


# --------------------------------------------------------------------------------------------
# SMTCheck on the real solvers.

SUM_DIFF = "(declare-const a Int)(declare-const b Int)(assert (= (+ a b) 30))(assert (= (- a b) 8))"
SOLVERS = [
    pytest.param("z3", marks=needs_z3, id="z3"),
    pytest.param("cvc5", marks=needs_cvc5, id="cvc5"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("solver", SOLVERS)
async def test_smt_number_must_be_the_forced_value(solver: str) -> None:
    verifier = SMTCheck(SUM_DIFF + "(check-sat)", symbol="a", solver=solver)  # type: ignore[arg-type]
    candidates = [
        Candidate(text="a + b = 30 and a - b = 8, so a = 19"),
        Candidate(text="x", answer="11"),
        Candidate(text="x", answer="19.5"),
    ]
    assert await verifier.verify("q", candidates) == [True, False, False]
    assert candidates[1].failure == "a = 11 violates the constraints"
    assert candidates[2].failure == "'19.5' is not an integer"
    loose = SMTCheck("(declare-const x Int)(assert (> (* x x) 3))", symbol="x", solver=solver)  # type: ignore[arg-type]
    assert await loose.verify("q", cands("2")) == [False]
    assert "is not the only solution" in loose.last_reports[0].reason
    assert await SMTCheck(loose.problem, symbol="x", unique=False).verify("q", cands("2")) == [True]


@pytest.mark.anyio
@pytest.mark.parametrize("solver", SOLVERS)
async def test_smt_assignment_formula_and_no_solution(solver: str) -> None:
    assignment = SMTCheck(SUM_DIFF, solver=solver)  # type: ignore[arg-type]
    verdicts = await assignment.verify(
        "q", cands("a = 19, b = 11", "(define-fun a () Int 19)(define-fun b () Int 12)", "a = 19")
    )
    assert verdicts == [True, False, False]
    assert assignment.last_reports[2].reason == "no value for b"
    # What ttc eval's answer extraction leaves (the last number) does not hide the assignment.
    extracted = Candidate(text="So a = 19 and b = 11, and a + b = 30.", answer="30")
    assert await assignment.verify("q", [extracted]) == [True]
    formula = SMTCheck(
        "(declare-const x Int)(assert (> x 0))",
        answer="formula",
        gold="(>= x 1)",
        solver=solver,  # type: ignore[arg-type]
    )
    injected = "(> x 100)) (assert false) (check-sat"
    assert await formula.verify("q", cands("```smt2\n(not (< x 1))\n```", "(> x 1)", injected)) == [
        True,
        False,
        False,
    ]
    assert "not an SMT-LIB term" in formula.last_reports[2].reason
    entailed = SMTCheck("(declare-const x Int)(assert (> x 5))", answer="formula", solver=solver)  # type: ignore[arg-type]
    assert await entailed.verify("q", cands("(> x 3)", "(> x 6)")) == [True, False]
    none = SMTCheck("(declare-const x Int)(assert (> x 3))(assert (< (* 2 x) 7))", symbol="x")
    assert await none.verify("q", cands("So there is no solution.", "x = 3")) == [True, False]


@pytest.mark.anyio
@pytest.mark.parametrize("solver", SOLVERS)
async def test_smt_unsat_verdicts_come_with_a_proof(solver: str) -> None:
    verifier = SMTCheck(SUM_DIFF, symbol="a", solver=solver, proofs=True)  # type: ignore[arg-type]
    assert await verifier.verify("q", cands("19")) == [True]
    proof = verifier.last_reports[0].output
    assert proof.strip().startswith("(") and len(proof) > 20  # the proof that a != 19 is unsat


@needs_z3
@pytest.mark.anyio
async def test_smt_a_hard_problem_gives_up_at_the_timeout() -> None:
    cubes = (
        "(declare-const x Int)(declare-const y Int)(declare-const z Int)"
        "(assert (and (> x 0) (> y 0) (> z 0)))"
        "(assert (= (+ (* x x x) (* y y y)) (* z z z)))"
    )
    verifier = SMTCheck(cubes, timeout=1)
    assert await verifier.verify("q", cands("x = 1, y = 2, z = 3", "no solution")) == [
        False,
        False,
    ]
    assert verifier.last_reports[1].reason.startswith("the solver gave up")


@needs_z3
@pytest.mark.anyio
async def test_smt_sample_answers_are_right_and_run_in_one_solver_process() -> None:
    data = load_dataset("smt-sample")
    rows = [json.loads(line) for line in data.path.read_text().splitlines()]
    for example, row in zip(data, rows, strict=True):
        verifier = data.verifier(example)
        assert isinstance(verifier, SMTCheck)
        right = f"The answer is {row['answer']}"
        verdicts = await verifier.verify(example.question, cands(right, "The answer is 8"))
        assert verdicts == [True, False], (example.id, verifier.last_reports[0].reason)
        assert verifier.last_reports[0].isolation in ("bwrap", "process")
        assert verifier.last_reports[0].network_isolated


def test_smt_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not SMT-LIB"):
        SMTCheck("(declare-const x Int")
    with pytest.raises(ConfigError, match="unsupported command"):
        SMTCheck("(declare-const x Int)(push 1)")
    with pytest.raises(ConfigError, match="symbol 'y'"):
        SMTCheck("(declare-const x Int)", symbol="y")
    with pytest.raises(ConfigError, match="gold"):
        SMTCheck("(declare-const x Int)", symbol="x", gold="(> x 1)")
    with pytest.raises(ConfigError, match="solver"):
        SMTCheck("(declare-const x Int)", symbol="x", solver="yices")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# LeanProof: files, commands, parsing and verdicts on recorded outputs of real Lean 4 runs.

NONCE = "0123abcd"
STATEMENT = "∀ x : Int, 3 * x + 2 = 14 → x = 4"


def lean(**kwargs: object) -> LeanProof:
    verifier = LeanProof(STATEMENT, name="linear_eq", **kwargs)  # type: ignore[arg-type]
    verifier._toolchain = ("/opt/lean/bin/lean", ("/proj/.lake/build/lib/lean",), ("/opt/lean",))
    return verifier


def check_run(verifier: LeanProof, found: list[str] | None, *, error_at: str = "") -> StepResult:
    """The check file's output: ``#print axioms`` at its line, or an error."""
    _, guard, printed = verifier.check_file(NONCE)
    file = f"Check_{NONCE}.lean"
    if error_at == "guard":
        return StepResult(1, lf.message(file, guard, 2, "error", lf.GUARD_FAILED) + "\n")
    if error_at == "unknown":  # both lines that name the theorem fail
        text = "unknown identifier '_root_.linear_eq'"
        return StepResult(
            1,
            lf.message(file, guard - 2, 40, "error", text)
            + "\n"
            + lf.message(file, guard, 25, "error", text)
            + "\n",
        )
    assert found is not None
    text = lf.axioms(f"ttc_check_{NONCE}", found)
    return StepResult(0, lf.message(file, printed, 0, "information", text) + "\n")


def test_lean_files_and_commands() -> None:
    verifier = lean(header="import Mathlib\nopen Nat")
    body = verifier.source(verifier._work(Candidate(text="```lean\nintro x h\nomega\n```")))
    assert body == (
        f"import Mathlib\nopen Nat\ntheorem linear_eq : {STATEMENT} := by\n  intro x h\n  omega\n"
    )
    whole = "import Mathlib\ntheorem linear_eq : ∀ x : Int, 3 * x + 2 = 14 → x = 4 := by omega"
    assert verifier.source(whole).count("import Mathlib") == 1  # the header's import, once
    check, guard, printed = verifier.check_file(NONCE)
    lines = check.splitlines()
    assert lines[:3] == ["import Mathlib", "import Candidate", "open Nat"]
    assert lines[guard - 1] == f"  guard_expr (type_of% @_root_.linear_eq) =ₐ ({STATEMENT})"
    assert lines[printed - 1] == f"#print axioms ttc_check_{NONCE}"
    first, second = verifier.steps("omega", NONCE)
    assert first.argv == (
        "/opt/lean/bin/lean", "--json", "-o", "Candidate.olean", "Candidate.lean",
    )  # fmt: skip
    assert second.argv == ("/opt/lean/bin/lean", "--json", f"Check_{NONCE}.lean")
    assert set(second.files) == {f"Check_{NONCE}.lean"}
    assert verifier._env("/tmp")["LEAN_PATH"] == "/proj/.lake/build/lib/lean:/tmp"


def test_lean_parses_its_json_messages_and_axiom_reports() -> None:
    output = "\n".join(
        [
            lf.message("Candidate.lean", 2, 8, "warning", lf.SORRY_WARNING),
            lf.message("Candidate.lean", 3, 2, "error", lf.UNSOLVED),
            "uncaught exception: out of memory",
        ]
    )
    messages, other = parse_messages(output)
    assert [(m.severity, m.line, m.column) for m in messages] == [
        ("warning", 2, 8),
        ("error", 3, 2),
    ]
    assert str(messages[0]) == "Candidate.lean:2:8: warning: declaration uses 'sorry'"
    assert other == ["uncaught exception: out of memory"]
    assert parse_axioms(
        "'Classical.em' depends on axioms: [Classical.choice, propext, Quot.sound]"
    ) == (
        "Classical.em",
        ["Classical.choice", "propext", "Quot.sound"],
    )
    assert parse_axioms("'f' does not depend on any axioms") == ("f", [])
    assert parse_axioms("'contra' depends on axioms: [sorryAx]") == ("contra", ["sorryAx"])
    assert parse_axioms("2") is None


@pytest.mark.parametrize(
    ("found", "error_at", "reason"),
    [
        ([], "", ""),
        (["propext", "Classical.choice", "Quot.sound"], "", ""),
        (["propext", "sorryAx"], "", "uses sorry (sorryAx)"),
        (["Lean.ofReduceBool"], "", "native_decide"),
        (["propext", "cheat"], "", "relies on axioms: cheat"),
        (None, "guard", "does not have the statement asked"),
        (None, "unknown", "does not define linear_eq"),
    ],
    ids=["closed", "standard", "sorry", "native-decide", "axiom", "changed-statement", "missing"],
)
def test_lean_verdicts_on_recorded_outputs(
    found: list[str] | None, error_at: str, reason: str
) -> None:
    verifier = lean()
    compiled = StepResult(0, "")
    verdict = verifier.decide([compiled, check_run(verifier, found, error_at=error_at)], NONCE)
    assert (reason in verdict) if reason else verdict == "", verdict


def test_lean_compile_errors_native_decide_policy_and_forged_reports() -> None:
    verifier = lean()
    failed = StepResult(1, lf.message("Candidate.lean", 3, 2, "error", lf.UNSOLVED) + "\n")
    assert verifier.decide([failed], NONCE).startswith(
        "lean rejected the proof: Candidate.lean:3:2: error: unsolved goals"
    )
    native = check_run(verifier, ["Lean.ofReduceBool"])
    assert lean(native_decide=True).decide([StepResult(0, ""), native], NONCE) == ""
    # A report of another declaration, or at another line, is not the check's.
    _, _, printed = verifier.check_file(NONCE)
    forged = StepResult(
        0,
        lf.message(f"Check_{NONCE}.lean", printed - 1, 0, "information",
                   lf.axioms(f"ttc_check_{NONCE}", [])) + "\n"
        + lf.message(f"Check_{NONCE}.lean", printed, 0, "information",
                     lf.axioms("linear_eq", [])) + "\n",
    )  # fmt: skip
    assert verifier.decide([StepResult(0, ""), forged], NONCE) == (
        "lean did not report the proof's axioms"
    )


def test_lean_strict_policy_refuses_language_extensions() -> None:
    verifier = lean()
    for script in (
        'macro "obviously" : tactic => `(tactic| exact sorryAx _)\nby obviously',
        'local notation "⟪" x "⟫" => x\nby omega',
        "#eval IO.println \"'ttc_check' does not depend on any axioms\"\nby omega",
        "set_option debug.skipKernelTC true in\ntheorem linear_eq : True := trivial",
        "@[implemented_by foo] def bar : Nat := 0\nby omega",
        'initialize IO.println "hi"\nby omega',
    ):
        assert "refuses" in verifier.refused(script), script
    assert verifier.refused("by\n  -- a macro would not help here\n  omega") == ""
    assert verifier.refused('by\n  have h : "syntax" = "syntax" := rfl\n  omega') == ""
    assert lean(policy="trusting").refused("macro_rules | `(x) => `(y)") == ""


FAKE_LEAN = '''\
#!{python}
"""A stand-in for `lean` that answers with recorded outputs of real Lean 4 runs."""
import json, os, re, sys
sys.path.insert(0, {fixtures!r})
import lean_fixtures as lf
args = sys.argv[1:]
if args == ["--print-prefix"]:
    print({prefix!r}); sys.exit(0)
file = args[-1]
text = open(file, encoding="utf-8").read()
if "-o" in args:
    if "FAIL" in text:
        print(lf.message(file, 3, 2, "error", lf.UNSOLVED)); sys.exit(1)
    if "sorry" in text:
        print(lf.message(file, 2, 8, "warning", lf.SORRY_WARNING))
    open(args[args.index("-o") + 1], "w").write("olean")
    sys.exit(0)
here = os.getcwd()
assert here in os.environ["LEAN_PATH"].split(":"), os.environ["LEAN_PATH"]
candidate = open(os.path.join(here, "Candidate.lean"), encoding="utf-8").read()
lines = text.splitlines()
printed = next(i for i, l in enumerate(lines, 1) if l.startswith("#print axioms"))
name = lines[printed - 1].split()[-1]
found = ["propext", "sorryAx"] if "sorry" in candidate else []
print(lf.message(file, printed, 0, "information", lf.axioms(name, found)))
'''


def _fake_lean(prefix: Path, top: Path) -> Path:
    (prefix / "bin").mkdir(parents=True)
    fake = prefix / "bin" / "lean"
    # The sandbox sees the toolchain's folder, not tests/: the recordings go with the stand-in.
    shutil.copy(Path(__file__).with_name("lean_fixtures.py"), prefix / "bin")
    fixtures = str(prefix / "bin")
    fake.write_text(FAKE_LEAN.format(python=sys.executable, fixtures=fixtures, prefix=str(prefix)))
    for path in (
        fake,
        prefix / "bin" / "lean_fixtures.py",
        prefix / "bin",
        prefix,
        top,
    ):  # the candidate's uid runs it, as root
        path.chmod(path.stat().st_mode | stat.S_IXOTH | stat.S_IROTH | stat.S_IXUSR)
    return fake


@pytest.mark.anyio
async def test_lean_runs_both_steps_in_the_sandbox(tmp_path: Path) -> None:
    """The whole path (toolchain lookup, both runs in the sandbox, LEAN_PATH, parsing) with a
    stand-in ``lean`` that replays recorded outputs."""
    prefix = tmp_path / "toolchain"
    fake = _fake_lean(prefix, tmp_path)
    verifier = LeanProof(STATEMENT, name="linear_eq", lean=str(fake))
    candidates = cands("by\n  intro x h\n  omega", "by sorry", "by\n  FAIL")
    verdicts = await verifier.verify("q", candidates)
    assert verdicts == [True, False, False], [r.reason for r in verifier.last_reports]
    assert candidates[1].failure == "the proof uses sorry (sorryAx)"
    assert candidates[2].failure is not None and "unsolved goals" in candidates[2].failure
    assert verifier.toolchain()[0] == str(prefix / "bin" / "lean")


def test_lean_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a"):
        LeanProof("theorem t : True")
    with pytest.raises(ConfigError, match="sorryAx"):
        LeanProof("True", allowed_axioms=["sorryAx"])
    with pytest.raises(ConfigError, match="policy"):
        LeanProof("True", policy="lenient")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lean"):
        LeanProof("True", lean="/no/such/lean").toolchain()


def test_lean_sample_loads_with_its_checker() -> None:
    data = load_dataset("lean-sample")
    example = next(iter(data))
    verifier = data.verifier(example)
    assert isinstance(verifier, LeanProof)
    assert verifier.name == "linear_eq"
    proof = json.loads(data.path.read_text().splitlines()[0])["proof"]
    assert verifier.source(proof).startswith(f"\ntheorem linear_eq : {example.reference} := by")


# --------------------------------------------------------------------------------------------
# Repeated sampling judged by the checkers.


@needs_coq
@pytest.mark.slow
@pytest.mark.anyio
async def test_scripted_prover_coverage_rises_with_k() -> None:
    """A model that writes the right proof one sample in three: RepeatedSample with CoqProof
    finds it, and coverage@k rises with k."""
    from ttc.adapters import FunctionModel
    from ttc.eval.metrics import coverage
    from ttc.strategies import RepeatedSample

    data = load_dataset("coq-sample", limit=2)
    rows = [json.loads(line) for line in data.path.read_text().splitlines()][:2]
    proofs = {e.question: r["proof"] for e, r in zip(data, rows, strict=True)}

    def reply(request: object, i: int) -> str:
        proof = proofs[request.prompt] if i % 3 == 2 else "Proof. Admitted."  # type: ignore[attr-defined]
        return f"```coq\n{proof}\n```"

    model = FunctionModel(reply)
    counts = []
    for example in data:
        strategy = RepeatedSample(
            model, n=6, verifier=data.verifier(example), extract=data.spec.extractor()
        )
        result = await strategy.run(data.prompt(example))
        assert [c.verified for c in result.candidates] == [False, False, True] * 2
        assert result.best is not None and result.best.verified
        assert result.candidates[0].failure is not None
        assert "Admitted" in result.candidates[0].failure
        counts.append((len(result.candidates), sum(bool(c.verified) for c in result.candidates)))
    curve = [coverage(counts, k) for k in (1, 2, 4, 6)]
    assert curve == sorted(curve) and curve[0] == pytest.approx(1 / 3) and curve[-1] == 1.0


@pytest.mark.anyio
async def test_unit_tests_put_the_failure_reason_on_the_candidate() -> None:
    from ttc.scoring import UnitTests

    candidates = cands("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b")
    verdicts = await UnitTests("assert add(2, 3) == 5\n").verify("q", candidates)
    assert verdicts == [False, True]
    assert candidates[0].failure == "exited with status 1 after 0 of 1 test statements"
    assert candidates[1].failure is None
