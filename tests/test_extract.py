"""Answer extraction and normalization."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ttc.errors import ConfigError
from ttc.scoring.extract import (
    extract_answer,
    extract_boxed,
    gsm8k_reference,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1}, finally \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed {x^{2}}", "x^{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
        (r"\boxed{\boxed{3}}", r"\boxed{3}"),  # the last *top-level* box
        (r"\boxed{\frac{1}{2}", None),  # cut off: no guess
        (r"\boxed{1} and then \boxed{2", None),
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"Thus $x = \boxed{\dfrac{3}{4}}$.", "0.75"),
        (r"The answer is 5, so \boxed{6}", "6"),  # a box beats the phrase
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("The answer is 18.", "18"),
        ("So the final answer is **$42$**.", "42"),
        ("THE ANSWER IS -3", "-3"),
        ("The answer is 3. Then the answer is 4. Done", "4"),  # the last occurrence
        ("The answer is 18 apples.", "18"),
        ("The answer is: $\\frac{1}{2}$. That is all.", "0.5"),
        ("**Final Answer:** 7", "7"),
        ("The answer is x + 1", "x+1"),
        ("we got 3 and then -17", "-17"),
        ("it costs $1,234.50 in total", "1234.5"),
        ("a ratio of 1/2", "0.5"),
        ("about 3.5.", "3.5"),
        ("5-3 leaves nothing", "3"),  # a minus between numbers is not a sign
        ("1, 2, 3", "3"),  # commas that are not thousands separators
        ("no numbers at all", None),
        (r"we have \boxed{2", None),  # truncated inside its answer
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  18  ", "18"),
        ("18.0", "18"),
        ("18.", "18"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("0.50", "0.5"),
        ("+5", "5"),
        ("1,234", "1234"),
        ("1,234,567.80", "1234567.8"),
        ("$18$", "18"),
        ("$$18$$", "18"),
        (r"\(18\)", "18"),
        ("$18", "18"),  # leading currency
        ("-$5", "-5"),
        (r"\text{18}", "18"),
        (r"\boxed{18}", "18"),
        ("2/4", "0.5"),
        (r"\frac{1}{3}", "1/3"),
        (r"\dfrac{2}{6}", "1/3"),
        (r"-\frac{1}{2}", "-0.5"),
        ("0.1234567890123", "0.1234567890123"),
        (r"\dfrac{x}{2}", r"\frac{x}{2}"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\left[0,1\right)", "[0,1)"),
        ("x + 1", "x+1"),
        (r"a \cdot b", r"a\cdot b"),  # the space after a command stays
        (r"50\%", "50%"),  # percent is kept: 50% is not 50
        (r"1\,000", "1000"),
        ("New York,  NY.", "New York, NY"),  # prose keeps its spaces
        ("1,2", "1,2"),  # a pair, not a thousands separator
        ("1e5", "1e5"),
        ("x", "x"),
        ("", ""),
    ],
)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


def test_normalize_huge_number_is_left_as_text() -> None:
    digits = "9" * 6000  # more digits than int() converts by default
    assert normalize_answer(digits) == digits


def test_equal_numbers_share_one_spelling() -> None:
    spellings = ["0.5", "0.50", "1/2", r"\frac{1}{2}", r"\dfrac{1}{2}", "$0.5$", r"\boxed{0.5}"]
    assert {normalize_answer(s) for s in spellings} == {"0.5"}


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_round_trip(n: int) -> None:
    assert normalize_answer(str(n)) == str(n)
    assert normalize_answer(f"{n:,}") == str(n)
    assert normalize_answer(f"{n}.00") == str(n)


@given(st.text(max_size=60))
@example("AA\\\r0")  # a backslash before a carriage return: once "AA\\ 0", then "AA0"
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once


@given(st.text(max_size=200))
def test_extract_never_raises(text: str) -> None:
    result = extract_answer(text)
    assert result is None or isinstance(result, str)


def test_gsm8k_reference() -> None:
    solution = "She has 3 * 400 = 1,200 apples.\nShe sells 34 more.\n#### 1,234"
    assert gsm8k_reference(solution) == "1234"
    assert gsm8k_reference("#### 72\n") == "72"


@pytest.mark.parametrize("solution", ["The answer is 72.", "#### ", ""])
def test_gsm8k_reference_missing(solution: str) -> None:
    with pytest.raises(ConfigError, match="####"):
        gsm8k_reference(solution)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 100 - 20 = 95.", "95"),  # the result of a worked equation
        ("The answer is 50% of 15 cups, so 7.5.", "7.5"),  # prose: its last number
        ("The answer is 18 apples.", "18"),
        ("The answer is New York.", "New York"),
    ],
)
def test_answer_phrase_with_working_or_prose(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_markup_stripping_knows_every_whitespace_character() -> None:
    """``_strip_markup`` strips with an explicit character list (faster than ``str.strip()``
    in a loop); it must hold exactly what ``str.isspace`` accepts."""
    from ttc.scoring.extract import _WHITESPACE

    assert set(_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


_PHRASE_PARTS = ["the", "The", "THE", "final", "Final", "answer", "Answer", "ANSWER", "is", ":"]
_PHRASE_PARTS += ["**", "#", ">", " ", "  ", "\n", "\t", "x", "42", "answers", "_", ".", "İ"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PHRASE_PARTS), max_size=16).map("".join))
def test_the_answer_scan_starting_at_the_first_answer_finds_what_a_full_scan_finds(
    text: str,
) -> None:
    """``_answer_lines`` skips the text before the first "answer" could start, and searches a
    text with one "answer" once; that must never lose or change a match."""
    from ttc.scoring.extract import _ANSWER_IS, _answer_lines

    assert _answer_lines(text) == [m.group(1) for m in _ANSWER_IS.finditer(text)]


def _extract_by_full_scan(text: str) -> str | None:
    """``extract_answer`` as it was before its fast paths: every regex scans the whole text,
    nothing is cached. The property tests below hold the fast one to it."""
    import re

    from ttc.scoring import extract as ex

    boxed: str | None = None
    pos = 0
    while (match := ex._BOX_OPEN.search(text, pos)) is not None:
        end = ex._match_braces(text, match.end() - 1)
        if end is None:
            return None
        boxed, pos = text[match.end() : end - 1].strip(), end
    if boxed is not None:
        return normalize_answer(boxed) if boxed else None
    gsm = ex._GSM8K.findall(text)
    if gsm and gsm[-1].strip():
        return normalize_answer(ex._strip_markup(gsm[-1]))
    phrase = None
    for match in reversed(list(ex._ANSWER_IS.finditer(text))):
        candidate = ex._strip_markup(match.group(1))
        candidate = ex._strip_markup(re.split(r"\.(?:\s|$)", candidate, maxsplit=1)[0])
        if candidate:
            phrase = candidate
            break
    if phrase is not None:
        if "=" in phrase and "\\" not in phrase:
            phrase = phrase.rsplit("=", 1)[1].strip() or phrase
        leading = ex._LEADING_NUMBER.match(phrase)
        if leading is not None and ex._canonical_number(leading.group(1)) is not None:
            return normalize_answer(leading.group(1))
        answer = normalize_answer(phrase)
        if ex._canonical_number(answer) is None and ex._PROSE.search(
            ex._LATEX_COMMAND.sub("", answer)
        ):
            in_prose = ex._NUMBER.findall(phrase)
            if in_prose:
                return normalize_answer(in_prose[-1])
        return answer
    numbers = ex._NUMBER.findall(text)
    return normalize_answer(numbers[-1]) if numbers else None


_SAMPLE_PARTS = [*_PHRASE_PARTS, "\\boxed{", "\\fbox{", "}", "{", "box", "####", "#### 7"]
_SAMPLE_PARTS += ["=", "3.5", "-3", "1,234", "1/2", "$", "apples", ". So", "18.", "\\frac{1}{2}"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_SAMPLE_PARTS), max_size=24).map("".join))
def test_extract_answer_with_its_fast_paths_finds_what_a_full_scan_finds(text: str) -> None:
    """The substring checks that skip the box and GSM8K scans, and the cached phrase steps,
    never change an answer (samples built from the pieces the rules look for)."""
    assert extract_answer(text) == _extract_by_full_scan(text)
    assert extract_answer(text) == _extract_by_full_scan(text)  # again: from the caches


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_extract_answer_on_any_text_finds_what_a_full_scan_finds(text: str) -> None:
    assert extract_answer(text) == _extract_by_full_scan(text)


def test_a_long_answer_line_is_read_the_same_and_not_cached() -> None:
    from ttc.scoring.extract import _cached_line_answer

    text = "So the answer is " + "a very long sentence, " * 40 + "and so 42 apples"
    before = _cached_line_answer.cache_info().currsize
    assert extract_answer(text) == _extract_by_full_scan(text) == "42"
    assert _cached_line_answer.cache_info().currsize == before


_STATED = ["the answer is ", "The Answer is ", "xthe answer is ", "_the answer is ", " is "]
_STATED += ["the ", "answer", "isn't", "x", "_", "\n", " ", ":", "*", "\t", "42", "7.", "İ"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_STATED), max_size=8).map("".join))
def test_a_stated_answer_read_without_the_regex_is_what_the_regex_reads(text: str) -> None:
    """A text whose one "answer" reads "the answer is X" skips the regex: the line must be
    the one its only match gives (and nothing when "the" is inside a word)."""
    from ttc.scoring.extract import _ANSWER_IS, _answer_lines

    assert _answer_lines(text) == [m.group(1) for m in _ANSWER_IS.finditer(text)]
    assert extract_answer(text) == _extract_by_full_scan(text)
