"""Small Python functions with one planted bug each: the building blocks of the curriculum.

A template takes a noun (`price`) and a random generator and returns a `BugCase`: the buggy and
the fixed source of one function, a test of it, the call the issue quotes, and the smallest
edit that fixes it. Each kind is a mistake whose fix needs the tools: find the function, read
it, make one small edit, run the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from string import Template


@dataclass
class BugCase:
    """One function with a planted bug, its fix and its test."""

    kind: str
    function: str
    buggy: str
    """Source of the buggy function (with any module constant it uses)."""
    fixed: str
    test: str
    """Source of `test_<function>()`; the function is in scope when it runs."""
    call: str
    """An expression the issue quotes, e.g. `total_prices(2, 3)`."""
    expected: object
    old: str
    """The smallest text of `buggy` that the fix replaces."""
    new: str
    fix_note: str
    """What the fix does, in a few words (the oracle's finish summary)."""


def _fill(text: str, **names: object) -> str:
    return Template(text).substitute({k: str(v) for k, v in names.items()})


def _case(kind: str, function: str, buggy: str, old: str, new: str, test: str, call: str,
          expected: object, fix_note: str, **names: object) -> BugCase:
    buggy = _fill(buggy, **names)
    old, new = _fill(old, **names), _fill(new, **names)
    if buggy.count(old) != 1:
        raise AssertionError(f"template {kind}: the edit must match the function once")
    return BugCase(kind, _fill(function, **names), buggy, buggy.replace(old, new),
                   _fill(test, **names), _fill(call, **names), expected, old, new,
                   _fill(fix_note, **names))


def wrong_operator_sum(noun: str, rng: random.Random) -> BugCase:
    a, b = rng.randint(3, 40), rng.randint(2, 30)
    return _case(
        "wrong_operator", "total_${noun}s",
        'def total_${noun}s(first, second):\n    """Return how many ${noun}s there are in '
        'both groups together."""\n    return first - second\n',
        "return first - second", "return first + second",
        "def test_total_${noun}s():\n    assert total_${noun}s($a, $b) == $s\n"
        "    assert total_${noun}s(0, 4) == 4\n",
        "total_${noun}s($a, $b)", a + b, "total_${noun}s now adds instead of subtracting.",
        noun=noun, a=a, b=b, s=a + b)


def wrong_operator_product(noun: str, rng: random.Random) -> BugCase:
    w, h = rng.randint(3, 12), rng.randint(3, 12)
    return _case(
        "wrong_operator", "${noun}_area",
        'def ${noun}_area(width, height):\n    """Return the area of a ${noun} plot: width '
        'times height."""\n    return width + height\n',
        "return width + height", "return width * height",
        "def test_${noun}_area():\n    assert ${noun}_area($w, $h) == $p\n",
        "${noun}_area($w, $h)", w * h, "${noun}_area multiplies width by height now.",
        noun=noun, w=w, h=h, p=w * h)


def wrong_comparison(noun: str, rng: random.Random) -> BugCase:
    limit = rng.randint(5, 50)
    high = limit + rng.randint(1, 20)
    return _case(
        "wrong_comparison", "is_${noun}_over_limit",
        'def is_${noun}_over_limit(value, limit):\n    """True when the ${noun} value is above '
        'the limit."""\n    return value < limit\n',
        "return value < limit", "return value > limit",
        "def test_is_${noun}_over_limit():\n    assert is_${noun}_over_limit($high, $limit) is "
        "True\n    assert is_${noun}_over_limit(1, $limit) is False\n",
        "is_${noun}_over_limit($high, $limit)", True,
        "is_${noun}_over_limit compares with > now.", noun=noun, high=high, limit=limit)


UNITS = [("minutes", "hours", "HOUR", 60), ("grams", "kilos", "KILO", 1000),
         ("centimetres", "metres", "METRE", 100), ("days", "weeks", "WEEK", 7),
         ("months", "years", "YEAR", 12), ("seconds", "minutes", "MINUTE", 60)]


def wrong_constant(noun: str, rng: random.Random) -> BugCase:
    small, big, big_one, right = rng.choice(UNITS)
    wrong = rng.choice([v for v in (10, 24, 50, 100, 365, 1024) if v != right])
    amount = rng.randint(2, 9)
    const = f"{small.upper()}_PER_{big_one}"
    return _case(
        "wrong_constant", "${noun}_in_${small}",
        '$const = $wrong\n\n\ndef ${noun}_in_${small}(${big}):\n    """Convert a ${noun} '
        'duration or size from ${big} to ${small}."""\n    return ${big} * $const\n',
        "$const = $wrong", "$const = $right",
        "def test_${noun}_in_${small}():\n    assert ${noun}_in_${small}($amount) == $result\n",
        "${noun}_in_${small}($amount)", amount * right, "$const is $right now.",
        noun=noun, small=small, big=big, const=const, wrong=wrong, right=right, amount=amount,
        result=amount * right)


def missing_return(noun: str, rng: random.Random) -> BugCase:
    values = [rng.randint(1, 9) * 2 for _ in range(rng.randint(2, 4))]
    return _case(
        "missing_return", "average_${noun}",
        'def average_${noun}(values):\n    """Return the mean of the ${noun} values."""\n'
        "    result = sum(values) / len(values)\n",
        "    result = sum(values) / len(values)\n",
        "    result = sum(values) / len(values)\n    return result\n",
        "def test_average_${noun}():\n    assert average_${noun}($values) == $mean\n",
        "average_${noun}($values)", sum(values) / len(values),
        "average_${noun} returns its result now.", noun=noun, values=values,
        mean=sum(values) / len(values))


def misspelt_name(noun: str, rng: random.Random) -> BugCase:
    typo = rng.choice(["cuont", "coutn", "conut", "countt"])
    items = [rng.choice(["a", "b", "c"]) if rng.random() < 0.7 else "" for _ in range(5)]
    return _case(
        "misspelt_name", "count_${noun}s",
        'def count_${noun}s(items):\n    """Count the ${noun} entries that are not empty."""\n'
        "    count = 0\n    for item in items:\n        if item:\n            count += 1\n"
        "    return $typo\n",
        "return $typo", "return count",
        "def test_count_${noun}s():\n    assert count_${noun}s($items) == $n\n",
        "count_${noun}s($items)", sum(1 for i in items if i),
        "count_${noun}s returns count (it said $typo).", noun=noun, typo=typo, items=items,
        n=sum(1 for i in items if i))


def off_by_one_range(noun: str, rng: random.Random) -> BugCase:
    n = rng.randint(3, 12)
    return _case(
        "off_by_one", "sum_${noun}s_up_to",
        'def sum_${noun}s_up_to(n):\n    """Return 1 + 2 + ... + n, the ${noun}s needed for n '
        'rows."""\n    total = 0\n    for number in range(1, n):\n        total += number\n'
        "    return total\n",
        "range(1, n)", "range(1, n + 1)",
        "def test_sum_${noun}s_up_to():\n    assert sum_${noun}s_up_to($n) == $s\n",
        "sum_${noun}s_up_to($n)", n * (n + 1) // 2,
        "sum_${noun}s_up_to includes n now.", noun=noun, n=n, s=n * (n + 1) // 2)


def off_by_one_index(noun: str, rng: random.Random) -> BugCase:
    items = rng.sample(["red", "blue", "green", "gold", "grey", "pink", "teal"], 4)
    return _case(
        "off_by_one", "last_${noun}",
        'def last_${noun}(items):\n    """Return the last ${noun} of the list."""\n'
        "    return items[len(items) - 2]\n",
        "len(items) - 2", "len(items) - 1",
        "def test_last_${noun}():\n    assert last_${noun}($items) == $last\n",
        "last_${noun}($items)", items[-1], "last_${noun} returns the last item now.",
        noun=noun, items=items, last=repr(items[-1]))


def wrong_default(noun: str, rng: random.Random) -> BugCase:
    wrong = rng.choice(["Hi", "Hey", "Bye", "Yo"])
    name = rng.choice(["Ann", "Bo", "Cleo", "Dev", "Eli"])
    return _case(
        "wrong_default", "greet_${noun}",
        'def greet_${noun}(name, greeting="$wrong"):\n    """Greet the ${noun} owner: '
        '\'Hello, <name>!\' by default."""\n    return f"{greeting}, {name}!"\n',
        'greeting="$wrong"', 'greeting="Hello"',
        "def test_greet_${noun}():\n    assert greet_${noun}(\"$name\") == \"Hello, $name!\"\n",
        "greet_${noun}(\"$name\")", f"Hello, {name}!",
        "greet_${noun} says Hello by default now.", noun=noun, wrong=wrong, name=name)


def swapped_operands(noun: str, rng: random.Random) -> BugCase:
    before = rng.randint(1, 20)
    after = before + rng.randint(1, 20)
    return _case(
        "swapped_operands", "${noun}_growth",
        'def ${noun}_growth(before, after):\n    """How many ${noun}s were gained from before to '
        'after."""\n    return before - after\n',
        "return before - after", "return after - before",
        "def test_${noun}_growth():\n    assert ${noun}_growth($before, $after) == $g\n",
        "${noun}_growth($before, $after)", after - before,
        "${noun}_growth subtracts before from after now.", noun=noun, before=before,
        after=after, g=after - before)


def wrong_boolean(noun: str, rng: random.Random) -> BugCase:
    low, high = rng.randint(1, 5), rng.randint(10, 20)
    outside = high + rng.randint(5, 30)
    return _case(
        "wrong_boolean", "${noun}_in_range",
        'def ${noun}_in_range(value, low, high):\n    """True when low <= value <= high for a '
        '${noun}."""\n    return low <= value or value <= high\n',
        "low <= value or value <= high", "low <= value and value <= high",
        "def test_${noun}_in_range():\n    assert ${noun}_in_range($outside, $low, $high) is "
        "False\n    assert ${noun}_in_range($low, $low, $high) is True\n",
        "${noun}_in_range($outside, $low, $high)", False,
        "${noun}_in_range uses and now.", noun=noun, low=low, high=high, outside=outside)


def wrong_method(noun: str, rng: random.Random) -> BugCase:
    want, got = rng.choice([("upper", "lower"), ("lower", "upper")])
    word = rng.choice(["Tag", "Label", "Box", "Shelf"])
    expected = getattr(word, want)()
    return _case(
        "wrong_method", "${noun}_label",
        'def ${noun}_label(name):\n    """Return the ${noun} name in $want case, for labels."""\n'
        "    return name.$got()\n",
        "name.$got()", "name.$want()",
        "def test_${noun}_label():\n    assert ${noun}_label(\"$word\") == \"$result\"\n",
        "${noun}_label(\"$word\")", expected, "${noun}_label uses $want() now.",
        noun=noun, want=want, got=got, word=word, result=expected)


def wrong_initial_value(noun: str, rng: random.Random) -> BugCase:
    numbers = [rng.randint(2, 5) for _ in range(3)]
    product = numbers[0] * numbers[1] * numbers[2]
    return _case(
        "wrong_initial_value", "product_of_${noun}s",
        'def product_of_${noun}s(numbers):\n    """Multiply the ${noun} counts together."""\n'
        "    result = 0\n    for number in numbers:\n        result *= number\n    return result\n",
        "result = 0", "result = 1",
        "def test_product_of_${noun}s():\n    assert product_of_${noun}s($numbers) == $p\n",
        "product_of_${noun}s($numbers)", product, "product_of_${noun}s starts from 1 now.",
        noun=noun, numbers=numbers, p=product)


@dataclass
class NewFunction:
    """A function the issue asks to create in a new module (the `missing_file` kind)."""

    function: str
    source: str
    test: str
    description: str


def new_function(noun: str, rng: random.Random) -> NewFunction:
    """The function of a `missing_file` task: specified in words, tested, absent from the repo."""
    choice = rng.randrange(3)
    if choice == 0:
        n = rng.randint(2, 30)
        return NewFunction(
            f"double_{noun}s",
            f'def double_{noun}s(count):\n    """Return twice the number of {noun}s."""\n'
            "    return count * 2\n",
            f"def test_double_{noun}s():\n    assert double_{noun}s({n}) == {2 * n}\n",
            f"`double_{noun}s(count)` that returns `count * 2`")
    if choice == 1:
        return NewFunction(
            f"has_{noun}s",
            f'def has_{noun}s(items):\n    """True when the list of {noun}s is not empty."""\n'
            "    return len(items) > 0\n",
            f"def test_has_{noun}s():\n    assert has_{noun}s(['x']) is True\n"
            f"    assert has_{noun}s([]) is False\n",
            f"`has_{noun}s(items)` that returns True when `items` is not empty, else False")
    return NewFunction(
        f"join_{noun}s",
        f'def join_{noun}s(names):\n    """Join the {noun} names with a comma and a space."""\n'
        '    return ", ".join(names)\n',
        f"def test_join_{noun}s():\n    assert join_{noun}s(['a', 'b']) == 'a, b'\n",
        f"`join_{noun}s(names)` that joins the names with \", \" (comma and space)")


TEMPLATES: dict[str, Callable[[str, random.Random], BugCase]] = {
    "wrong_operator_sum": wrong_operator_sum,
    "wrong_operator_product": wrong_operator_product,
    "wrong_comparison": wrong_comparison,
    "wrong_constant": wrong_constant,
    "missing_return": missing_return,
    "misspelt_name": misspelt_name,
    "off_by_one_range": off_by_one_range,
    "off_by_one_index": off_by_one_index,
    "wrong_default": wrong_default,
    "swapped_operands": swapped_operands,
    "wrong_boolean": wrong_boolean,
    "wrong_method": wrong_method,
    "wrong_initial_value": wrong_initial_value,
}
"""Every fix-a-function template by name; `missing_file` is handled by the curriculum."""
