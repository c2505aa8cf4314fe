"""Reading the final answer out of a sample, and normalizing answers so that votes can be counted.

Normalization is deliberately syntactic: it makes ``"1,234"``, ``"$1234$"`` and ``"1234.0"`` one
vote, and ``"\\frac{1}{2}"``, ``"1/2"`` and ``"0.5"`` another, but it does not decide mathematical
equivalence (``x+1`` and ``1+x`` stay different). Use ``MathAnswer`` for equivalence.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from ttc.errors import ConfigError

__all__ = ["extract_answer", "extract_boxed", "gsm8k_reference", "normalize_answer"]

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(
    r"(?:\bthe\s+(?:final\s+)?answer\s+is\b"  # "the (final) answer is X"
    r"|^[ \t>*_#]*(?:final\s+)?answer[*_]*\s*:)"  # an "(Final) Answer: X" line
    r"[ \t:*_]*(?=([^\n]*))",  # a lookahead, so a later phrase on the line is found too
    re.IGNORECASE | re.MULTILINE,
)
# An integer with correct thousands grouping, or plain digits.
_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_NUMBER = re.compile(rf"(?<![\w.])(?:-(?=\d))?{_INT}(?:\.\d+)?(?:/{_INT})?")
_LEADING_NUMBER = re.compile(rf"^\$?\s*(-?\$?\s*{_INT}(?:\.\d+)?(?:/{_INT})?)\s+[A-Za-z]")
_SIMPLE_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?$")
_LATEX_FRAC = re.compile(r"^([-+]?)\\frac\{\s*([-+]?\d+)\s*\}\{\s*([-+]?\d+)\s*\}$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textrm|mbox)\s*\{([^{}]*)\}")
# A backslash before any whitespace is a control space, not only before a space: before a tab
# or a line break it would become one when whitespace is folded, and a second pass remove it.
_THIN_SPACES = re.compile(r"\\(?:[,!;:]|\s)")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?:\.|(?![A-Za-z]))")
_SPACE_AROUND_SYMBOL = re.compile(r"\s*([^\w\s])\s*")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_PROSE = re.compile(r"[A-Za-z]{2,}")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Beyond this many digits a decimal expansion is not worth printing; the fraction is kept.
_MAX_DECIMALS = 12


def _match_braces(text: str, start: int) -> int | None:
    """Index just past the ``}`` that closes the ``{`` at ``start``; ``None`` if it never closes.

    ``\\{`` and ``\\}`` are literal braces in LaTeX and do not count.
    """
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last top-level ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    Braces are matched, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``; a box that never
    closes (a truncated sample) gives ``None`` rather than a guess.
    """
    return _last_box(text)[0]


def _last_box(text: str) -> tuple[str | None, bool]:
    """The last top-level box's content, and whether a box was left open (a truncated sample)."""
    if "box" not in text:  # every box command has it: most samples skip the regex scan
        return None, False
    found: str | None = None
    pos = 0
    while True:
        match = _BOX_OPEN.search(text, pos)
        if match is None:
            return found, False
        brace = match.end() - 1
        end = _match_braces(text, brace)
        if end is None:
            return None, True
        found = text[brace + 1 : end - 1].strip()
        pos = end


# Every character ``str.isspace`` accepts (tests/test_extract.py checks the list is complete).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_MARKUP_LEFT = _WHITESPACE + "*_"
_MARKUP_RIGHT = _MARKUP_LEFT + "."


def _strip_markup(answer: str) -> str:
    """Remove what surrounds an answer in prose: bold markers, math dollars, a final period."""
    s = answer.lstrip(_MARKUP_LEFT).rstrip(_MARKUP_RIGHT)
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].lstrip(_MARKUP_LEFT).rstrip(_MARKUP_RIGHT)
    return s


def _canonical_number(text: str) -> str | None:
    """One spelling per plain number (``18.0`` -> ``18``, ``2/4`` -> ``0.5``); else ``None``."""
    if len(text) < 20 and text.isascii() and text.isdigit():  # common: no Fraction needed
        return str(int(text))
    s = text.replace("−", "-").strip()
    sign = ""
    if s and s[0] in "+-":
        sign, s = s[0], s[1:].lstrip()
    if s.startswith("$"):  # a leading currency sign; a trailing "$" is not currency
        s = s[1:].lstrip()
    if s and s[0] in "+-" and not sign:
        sign, s = s[0], s[1:].lstrip()
    frac = _LATEX_FRAC.match(s)
    places = _MAX_DECIMALS
    try:
        if frac is not None:
            inner_sign, num, den = frac.groups()
            value = Fraction(int(num), int(den))
            if inner_sign == "-":
                value = -value
        else:
            if _THOUSANDS.match(s):
                s = s.replace(",", "")
            if not _SIMPLE_NUMBER.match(s):
                return None
            value = Fraction(s)
            if "." in s:  # a decimal as written keeps its decimal form however long it is
                places = len(s) - s.index(".") - 1
    except (ValueError, ZeroDivisionError):  # n/0, or more digits than int() accepts
        return None
    if sign == "-":
        value = -value
    return _format_fraction(value, max(places, _MAX_DECIMALS))


def _format_fraction(value: Fraction, max_places: int = _MAX_DECIMALS) -> str:
    """An integer, a terminating decimal, or ``p/q`` when the decimal would not terminate."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    places = max(twos, fives)
    if den != 1 or places > max_places:
        return f"{value.numerator}/{value.denominator}"
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    body = f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return f"-{body}" if value < 0 else body


@lru_cache(maxsize=8192)  # pure, and votes normalize the same few answers over and over
def normalize_answer(answer: str) -> str:
    """A canonical spelling of ``answer``, so that equal answers get one vote.

    Strips whitespace, math delimiters (``$...$``, ``\\(...\\)``), a whole-answer ``\\boxed{}``,
    ``\\text{...}`` wrappers and a trailing period; rewrites ``\\dfrac``/``\\tfrac`` as ``\\frac``,
    drops ``\\left``/``\\right`` and thin spaces and the spaces around symbols. Numbers lose
    thousands commas and a leading currency ``$`` and get one spelling (``18.0`` -> ``18``,
    ``-0`` -> ``0``, ``0.50`` -> ``0.5``, ``\\frac{1}{2}`` -> ``0.5``, ``2/6`` -> ``1/3``). A
    percent sign is kept: ``50%`` and ``0.5`` are different answers to most questions.
    """
    s = answer.strip()
    while True:
        before = s
        for left, right in _MATH_DELIMITERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)].strip()
        boxed = _BOX_OPEN.match(s)
        if boxed is not None and _match_braces(s, boxed.end() - 1) == len(s):
            s = s[boxed.end() : -1].strip()
        s = s.rstrip().rstrip(".").rstrip()
        if s == before:
            break
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LEFT_RIGHT.sub("", s)
    s = _THIN_SPACES.sub("", s)
    s = s.replace("\\%", "%").replace("\\$", "$")
    s = " ".join(s.split())
    s = s.rstrip(".").strip()
    number = _canonical_number(s)
    if number is not None:
        return number
    if _PROSE.search(_LATEX_COMMAND.sub("", s)):
        return s  # words: spaces carry meaning ("New York, NY")
    return _SPACE_AROUND_SYMBOL.sub(r"\1", s)  # math: "x + 1" and "x+1" are one answer


_SENTENCE_END = re.compile(r"\.(?:\s|$)")


# What may stand between where an "answer is" phrase starts and its word "answer": "the",
# "final", markup and whitespace (either case: the phrase is matched ignoring case).
_ANSWER_LEAD = _WHITESPACE + ">*_#" + "thefinalTHEFINAL"


def _answer_lines(text: str) -> list[str]:
    """What follows each "the (final) answer is" / "Answer:" match in ``text`` on its line,
    in order.

    Each match contains the word "answer", so the scan starts where the first one could begin
    rather than at the top of a long sample, and a text with one "answer" in it is searched
    once for its one possible match (ASCII texts only: their lowercase has the same
    indices)."""
    start = 0
    if text.isascii():
        lower = text.lower()
        first = lower.find("answer")
        if first < 0:
            return []
        if lower.find("answer", first + 6) < 0:  # the common case: one "answer", one match
            if (
                first >= 4
                and lower.startswith(" is ", first + 6)
                and lower.startswith("the ", first - 4)
                and (first == 4 or not _is_word(lower[first - 5]))
            ):
                # "the answer is X", read as the regex would (its only match), without it
                return [text[first + 9 :].lstrip(" \t:*_").partition("\n")[0]]
            start = len(text[:first].rstrip(_ANSWER_LEAD))
            match = _ANSWER_IS.search(text, start)
            return [] if match is None else [match.group(1)]
        start = len(text[:first].rstrip(_ANSWER_LEAD))
    return [match.group(1) for match in _ANSWER_IS.finditer(text, start)]


def _is_word(char: str) -> bool:
    """Whether an ASCII ``char`` is a regex word character (``\\w``)."""
    return char.isalnum() or char == "_"


# The steps below depend on an answer line alone, and samples state the same few answers over
# and over: cached like ``normalize_answer``, they cost a dict lookup for most samples. Only
# short lines are cached, so the cache stays small whatever the samples hold.
_CACHED_LEN = 256


def _clean(line: str) -> str:
    """The answer phrase in what follows "the answer is" on its line: markup stripped, cut at
    the end of its sentence ("18. So Tom has ..."), not inside "3.5"."""
    phrase = _SENTENCE_END.split(_strip_markup(line), maxsplit=1)[0]
    return _strip_markup(phrase)


def _read_phrase(phrase: str) -> str:
    """The normalized answer that an "the answer is" phrase states."""
    if "=" in phrase and "\\" not in phrase:
        phrase = phrase.rsplit("=", 1)[1].strip() or phrase  # "100 - 20 = 80" -> "80"
    leading = _LEADING_NUMBER.match(phrase)  # "18 apples" -> "18"
    if leading is not None and _canonical_number(leading.group(1)) is not None:
        return normalize_answer(leading.group(1))
    answer = normalize_answer(phrase)
    if _canonical_number(answer) is None and _PROSE.search(_LATEX_COMMAND.sub("", answer)):
        in_prose: list[str] = _NUMBER.findall(phrase)  # "50% of 15 cups, so 7.5" -> "7.5"
        if in_prose:
            return normalize_answer(in_prose[-1])
    return answer


def _line_answer(line: str) -> str | None:
    """The answer an "the answer is" line states; ``None`` if it states nothing (an earlier
    line may)."""
    phrase = _clean(line)
    return _read_phrase(phrase) if phrase else None


_cached_line_answer = lru_cache(maxsize=4096)(_line_answer)


def _answer_in_phrase(text: str) -> str | None:
    """The answer after the last "the (final) answer is" / "Answer:" in ``text`` that states
    one; ``None`` if none does."""
    lines = _answer_lines(text)
    for line in reversed(lines):
        answer = _cached_line_answer(line) if len(line) <= _CACHED_LEN else _line_answer(line)
        if answer is not None:
            return answer
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a sample, normalized; ``None`` if the sample states none.

    Tries, in order: the last ``\\boxed{}``; GSM8K's ``#### N``; the last "the answer is X" or
    "the final answer is X" (or an "Answer: X" line); the last number in the text (``-3``,
    ``1,234``, ``3.5``, ``1/2``).
    """
    if "box" in text or "####" in text:  # every box command has "box": most samples skip this
        boxed, left_open = _last_box(text)
        if left_open:
            return None  # cut off inside its answer: any number found would be a guess
        if boxed is not None:
            return normalize_answer(boxed) if boxed else None
        gsm: list[str] = _GSM8K.findall(text) if "####" in text else []
        if gsm and gsm[-1].strip():
            return normalize_answer(_strip_markup(gsm[-1]))
    answer = _answer_in_phrase(text)
    if answer is not None:
        return answer
    numbers: list[str] = _NUMBER.findall(text)
    if numbers:
        return normalize_answer(numbers[-1])
    return None


def gsm8k_reference(solution_text: str) -> str:
    """The reference answer of a GSM8K solution: the number after ``#### ``, commas removed."""
    found: list[str] = _GSM8K.findall(solution_text)
    if not found or not found[-1].strip():
        raise ConfigError("gold: a GSM8K solution must end with '#### <number>'; none found")
    return found[-1].strip().replace(",", "")
