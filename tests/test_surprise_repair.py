"""One-line repair candidates from the model's surprise (`agent/surprise_repair.py`)."""

from __future__ import annotations

import ast

import pytest

from agent.surprise_repair import LineEdit, candidate_edits, editable_lines, interleaved

SOURCE = '''import itertools


def take(n, seq):
    """The first n elements of seq."""
    return itertools.islice(seq, n)


@staticmethod
def is_even(number):
    """True when number
    is even."""
    # the remainder by two

    return number % 2 == 1


def last(seq):
    """The last element of seq."""
    return seq[-1]
'''
BUGGY_LINE = 15


def test_an_edit_changes_its_line_only_and_keeps_its_ending() -> None:
    edit = LineEdit(2, "b", "c", 0.0, "replace")
    assert edit.apply("a\r\nb\r\nd\n") == "a\r\nc\r\nd\n"
    with pytest.raises(ValueError, match="line 2 is not 'b'"):
        edit.apply("a\nx\nd\n")
    with pytest.raises(ValueError):
        LineEdit(9, "b", "c", 0.0, "replace").apply("a\nb\n")


def test_only_code_lines_are_editable() -> None:
    # The decorator, the def, the two-line docstring, the comment and the blank line are not.
    assert editable_lines(SOURCE, 9, 15) == {BUGGY_LINE}
    assert editable_lines(SOURCE, 4, 6) == {6}


@pytest.mark.usefixtures("model_ready")
def test_the_real_model_proposes_the_fix_first() -> None:
    from agent.local_model import load_local_model

    local = load_local_model("smollm2-135m")
    edits = candidate_edits(local.model, local.tokenizer, SOURCE, 9, 15)
    assert edits, "no candidate for a flipped remainder"
    assert edits[0].new == "    return number % 2 == 0"
    assert edits[0].gain > 0
    assert [e.gain for e in edits] == sorted((e.gain for e in edits), reverse=True)
    for edit in edits:
        assert edit.line == BUGGY_LINE and edit.old == "    return number % 2 == 1"
        ast.parse(edit.apply(SOURCE))  # only candidates that parse


def test_nothing_to_edit_gives_no_candidates() -> None:
    # Lines 4-5 are the def and the docstring: no model is needed to know there is nothing.
    assert candidate_edits(None, None, SOURCE, 4, 5) == []


def test_candidates_are_tried_round_robin_and_unlikelier_code_is_left_out() -> None:
    def edit(name: str, gain: float) -> LineEdit:
        return LineEdit(1, "x", name, gain, "replace")

    first = [edit("a1", 9.0), edit("a2", 1.0), edit("a3", -0.5)]
    second = [edit("b1", 3.0)]
    third = [edit("c1", 0.5), edit("c2", 0.2)]
    order = interleaved([first, second, third])
    assert [(i, e.new) for i, e in order] == [(0, "a1"), (1, "b1"), (2, "c1"), (0, "a2"),
                                              (2, "c2")]
    assert [e.new for _, e in interleaved([first], min_gain=float("-inf"))] == ["a1", "a2", "a3"]
    assert interleaved([]) == []
