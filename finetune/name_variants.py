"""Vary the surface of a planted bug so that training does not learn one spelling of it.

The templates in `finetune.bug_templates` always use the same parameter and function names
(`total_prices(first, second)`); a model trained only on them learns those names, not the fix.
`vary` renames the parameters and the function of a `BugCase` consistently (in the buggy and
fixed source, the edit, the test, the call and the note), and `twin_of` writes a correct
neighbour whose body holds the same line as the bug, so that the smallest edit is no longer
unique and the fix must be anchored on the function's own lines, as in real code
(`add` and `subtract` both written `return a - b`).

    case = vary(TEMPLATES["wrong_operator_sum"]("price", rng), rng)
    twin = twin_of(case, "price", rng)   # None for kinds without one
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from finetune.bug_templates import BugCase

PARAMETERS: dict[tuple[str, ...], list[tuple[str, ...]]] = {
    ("first", "second"): [("a", "b"), ("x", "y"), ("left", "right"), ("m", "n"),
                          ("first", "second")],
    ("width", "height"): [("w", "h"), ("a", "b"), ("x", "y"), ("width", "height")],
    ("value", "limit"): [("x", "bound"), ("a", "b"), ("amount", "maximum"), ("value", "limit")],
    ("before", "after"): [("start", "end"), ("a", "b"), ("old", "new"), ("before", "after")],
    ("values",): [("numbers",), ("xs",), ("data",), ("values",)],
    ("items",): [("entries",), ("xs",), ("things",), ("items",)],
    ("n",): [("k",), ("top",), ("limit",), ("n",)],
    ("name",): [("text",), ("word",), ("s",), ("name",)],
    ("name", "greeting"): [("who", "greeting"), ("person", "prefix"), ("name", "hello"),
                           ("name", "greeting")],
    ("value", "low", "high"): [("x", "lo", "hi"), ("n", "lower", "upper"),
                               ("value", "low", "high")],
    ("numbers",): [("factors",), ("values",), ("xs",), ("numbers",)],
}
"""A template's parameters -> the names they may be given instead (the same roles)."""

FUNCTIONS: dict[str, list[str]] = {
    "total_{noun}s": ["add_{noun}s", "sum_{noun}s", "{noun}_total", "combined_{noun}s"],
    "{noun}_area": ["area_of_{noun}", "{noun}_size", "multiply_{noun}"],
    "is_{noun}_over_limit": ["{noun}_exceeds", "is_{noun}_too_big", "over_{noun}_limit"],
    "average_{noun}": ["mean_{noun}", "{noun}_mean", "average_of_{noun}s"],
    "count_{noun}s": ["{noun}_count", "number_of_{noun}s", "count_filled_{noun}s"],
    "sum_{noun}s_up_to": ["triangle_{noun}s", "{noun}s_needed", "sum_to_{noun}"],
    "last_{noun}": ["final_{noun}", "{noun}_at_end", "newest_{noun}"],
    "greet_{noun}": ["{noun}_greeting", "hello_{noun}", "welcome_{noun}"],
    "{noun}_growth": ["{noun}_gain", "gained_{noun}s", "{noun}_increase"],
    "{noun}_in_range": ["{noun}_between", "is_{noun}_within", "{noun}_ok"],
    "{noun}_label": ["{noun}_tag", "format_{noun}", "{noun}_title"],
    "product_of_{noun}s": ["multiply_{noun}s", "{noun}_product", "{noun}s_multiplied"],
}
"""A template's function name -> other names for the same function."""


def _rename(text: str, old: str, new: str) -> str:
    """Replace the identifier `old` (also inside `test_old`), never a longer name."""
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(old)}(?![A-Za-z0-9_])", new, text)


def _rename_case(case: BugCase, old: str, new: str) -> BugCase:
    fields = ("function", "buggy", "fixed", "test", "call", "old", "new", "fix_note")
    return replace(case, **{f: _rename(getattr(case, f), old, new) for f in fields})


def _parameters(case: BugCase) -> tuple[str, ...]:
    match = re.search(rf"def {re.escape(case.function)}\(([^)]*)\)", case.buggy)
    if not match:
        return ()
    return tuple(p.split("=")[0].strip() for p in match.group(1).split(",") if p.strip())


def _free(case: BugCase, names: tuple[str, ...], current: tuple[str, ...]) -> bool:
    """True when none of `names` already occurs in the case (other than as itself)."""
    text = "\n".join((case.buggy, case.fixed, case.test, case.call))
    return not any(name not in current and re.search(rf"\b{re.escape(name)}\b", text)
                   for name in names)


def vary(case: BugCase, noun: str, rng: random.Random) -> BugCase:
    """The same bug with other parameter names and another function name (or the same)."""
    current = _parameters(case)
    options = [names for names in PARAMETERS.get(current, []) if _free(case, names, current)]
    if options:
        names = rng.choice(options)
        for old, placeholder in zip(current, [f"__p{i}__" for i in range(len(current))],
                                    strict=True):
            case = _rename_case(case, old, placeholder)
        for i, new in enumerate(names):
            case = _rename_case(case, f"__p{i}__", new)
    stem = next((s for s in FUNCTIONS if s.format(noun=noun) == case.function), None)
    if stem is not None:
        function = rng.choice([stem, *FUNCTIONS[stem]]).format(noun=noun)
        if function == case.function or _free(case, (function,), ()):
            case = _rename_case(case, case.function, function)
    if case.buggy.count(case.old) != 1:
        raise AssertionError(f"renaming {case.function} made its edit ambiguous")
    return case


TWINS: dict[str, tuple[str, str, str]] = {
    "wrong_operator_sum": ("{noun}_difference", "Return {0} minus {1}.", "(9, 4) == 5"),
    "wrong_operator_product": ("{noun}_half_perimeter", "Half the perimeter: {0} plus {1}.",
                               "(3, 4) == 7"),
    "wrong_comparison": ("is_{noun}_under_limit", "True when {0} is below {1}.",
                         "(1, 5) is True"),
    "swapped_operands": ("{noun}_loss", "How many were lost from {0} to {1}.", "(9, 4) == 5"),
}
"""Kinds whose buggy line is a correct line of another function: (name, docstring, test)."""


def twin_of(case: BugCase, noun: str, kind: str) -> BugCase | None:
    """A correct function of the same module whose body is the target's buggy line, or None."""
    if kind not in TWINS or not case.old.startswith("return "):
        return None
    name, doc, check = TWINS[kind]
    params = _parameters(case)
    function = name.format(noun=noun)
    source = (f"def {function}({', '.join(params)}):\n"
              f'    """{doc.format(*params)}"""\n    {case.old}\n')
    return BugCase(kind="twin", function=function, buggy=source, fixed=source,
                   test=f"def test_{function}():\n    assert {function}{check}\n",
                   call=f"{function}{check.split(' ')[0]}", expected=None, old=case.old,
                   new=case.old, fix_note="")
