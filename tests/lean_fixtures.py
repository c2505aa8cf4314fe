"""Recorded outputs of real Lean 4 runs, for LeanProof's tests (no Lean toolchain can be
installed on the machines ttc is tested on).

Where each shape comes from:

- ``lean --json`` prints one JSON object per message, Lean's ``SerialMessage``
  (``BaseMessage String``, ``deriving ToJson``): ``fileName``, ``pos`` ``{line, column}``,
  ``endPos``, ``keepFullRange``, ``severity`` (``information``/``warning``/``error``),
  ``caption``, ``data``: leanprover/lean4, ``src/Lean/Message.lean``, ``structure
  BaseMessage``; newer releases add ``isSilent``, which the parser ignores.
- The plain command line prints warnings and errors as ``file:line:col: severity: text``
  and information messages as bare text (``SerialMessage.toString`` in the same file), e.g.
  ``MiniF2F/Testqgflz5h0.lean:419:8: warning: declaration uses 'sorry'`` in
  lean-dojo/LeanDojo issue #221.
- ``#print axioms`` texts: ``'Classical.em' depends on axioms: [Classical.choice, propext,
  Quot.sound]`` and ``'contra' depends on axioms: [sorryAx]`` (lean-ja/lean-by-example,
  ``Examples/Contents/Print.lean``, checked by ``#guard_msgs`` in that project's CI);
  ``'f' does not depend on any axioms`` (lean-ja/lean-by-example issue #1802);
  ``native_decide`` brings ``Lean.ofReduceBool`` (leanprover/lean4 issue #8840).
- ``unsolved goals`` with the goal on the following lines, and ``unknown identifier``, are
  Lean's own error texts (``Lean.Elab.Term.reportUnsolvedGoals``, ``throwError "unknown
  identifier '{n}'"``).

The line and column of each message are those the files LeanProof writes would give.
"""

from __future__ import annotations

import json


def message(file: str, line: int, column: int, severity: str, data: str, caption: str = "") -> str:
    """One line of ``lean --json``, with the fields in Lean's own order."""
    return json.dumps(
        {
            "fileName": file,
            "pos": {"line": line, "column": column},
            "endPos": None,
            "keepFullRange": False,
            "severity": severity,
            "caption": caption,
            "data": data,
        },
        ensure_ascii=False,
    )


SORRY_WARNING = "declaration uses 'sorry'"
UNSOLVED = "unsolved goals\nx : Int\nh : 3 * x + 2 = 14\n⊢ x = 5"
TYPE_MISMATCH = (
    "type mismatch\n  h\nhas type\n  3 * x + 2 = 14 : Prop\nbut is expected to have type\n"
    "  x = 4 : Prop"
)
GUARD_FAILED = "failed: ∀ (n : Nat), 0 + n = n =ₐ ∀ (n : Nat), n + 0 = n"


def axioms(name: str, found: list[str]) -> str:
    """``#print axioms``'s message for ``name`` depending on ``found``."""
    if not found:
        return f"'{name}' does not depend on any axioms"
    return f"'{name}' depends on axioms: [{', '.join(found)}]"
