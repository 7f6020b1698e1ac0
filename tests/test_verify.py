r"""The graders of issue 24: every defect example, the refusals that keep false positives out, hostile sizes,
the exact evaluator against hand-computed values, the `grader` option, and countdown against TinyZero at any length.
"""
import math
import os
import random
import time
from fractions import Fraction

import pytest

from nanor1.symbolic import Unsupported, value
from nanor1.tasks import get_task
from nanor1.verify import (answer_span, answers_match, check_grader, eval_arith, last_boxed, last_number,
                           math_equal, normalize_math)
from tests.test_tasks import _tinyzero_score


def gsm(answer, gold, template="base"):
    task = get_task("gsm8k", template)
    text = f"<think>...</think> <answer>{answer}</answer>" if template == "base" else f"so \\boxed{{{answer}}}."
    return task.reward(text, {"gold": gold})


def math_reward(completion, gold, template="instruct"):
    return get_task("math", template).reward(completion, {"gold": gold})


# --------------------------------------------------------------------------------------------------- GSM8K

@pytest.mark.parametrize("answer,gold,want", [
    ("\u221220", "20", 0.0), ("\u221210", "-10", 1.0), ("\u221220", "-20", 1.0),  # U+2212 is a minus sign
    ("\uff0d3", "-3", 1.0), ("The loss is \u221245 dollars.", "-45", 1.0),
    ("\\frac{5}{2}", "2", 0.0), ("\\frac{5}{2}", "2.5", 1.0), ("\\dfrac{5}{2}", "5", 0.0),
    ("2 \\frac{1}{2}", "2", 0.0), ("2 \\frac{1}{2}", "2.5", 1.0), ("2\\frac12", "2.5", 1.0),
    ("2 1/2", "2.5", 1.0), ("2 1/2", "2", 0.0), ("2 3/2", "2", 0.0),  # improper "mixed": refused
    ("3/3", "3", 0.0), ("3/3", "1", 1.0), ("56/2", "2", 0.0), ("56/2", "28", 1.0),
    ("60 ft^2", "2", 0.0), ("60 ft^2", "60", 1.0), ("60 ft\u00b2", "60", 1.0), ("60 ft^{2}", "60", 1.0),
    ("60 \\text{ ft}^2", "60", 1.0), ("60 m2", "60", 1.0), ("60 m2", "2", 0.0),
])
def test_gsm8k_issue_examples(answer, gold, want):
    assert gsm(answer, gold) == want
    assert gsm(answer, gold, "instruct") == want


@pytest.mark.parametrize("answer,gold,want", [
    ("18", "18", 1.0), ("She makes $18.", "18", 1.0), ("\\$18.00", "18", 1.0), ("9 * 2 = 18", "18", 1.0),
    ("9 \\times 2 = 18 dollars", "18", 1.0), ("9 \u00d7 2 = 18", "18", 1.0), ("25%", "25", 1.0),
    ("1.2 \\times 10^3", "1200", 1.0), ("1,200,000", "1200000", 1.0), ("x = 18", "18", 1.0),
    ("\\boxed{\\text{18}}", "18", 1.0), ("18th", "18", 1.0), ("20-18", "18", 0.0), ("20-18", "2", 1.0),
    # refused: a guess could be a false positive
    ("2\\sqrt{2}", "2", 0.0), ("2\\pi", "2", 0.0), ("10^x", "10", 0.0), ("x2", "2", 0.0), ("3:30", "30", 0.0),
    ("\u201320", "20", 0.0), ("1 2", "2", 0.0), ("18 -", "18", 0.0), ("(18", "18", 1.0),
    # found by the adversarial corpus (bench/grader_corpus.py): each was a false positive
    ("2\u00bd", "2", 0.0), ("2\u00bd", "2.5", 1.0), ("10\u2076", "10", 0.0), ("10\u2076", "1000000", 1.0),
    ("18 million", "18", 0.0), ("2 dozen", "2", 0.0), ("5 \\text{ thousand}", "5", 0.0), ("18 and 1/2", "0.5", 0.0),
    ("18 and a half", "18", 0.0), ("18,5", "5", 0.0), ("1,20", "20", 0.0), ("2\u221a2", "2", 0.0), ("2 pi", "2", 0.0),
    ("3i", "3", 0.0), ("CO2", "2", 0.0), ("18 (final)", "18", 1.0), ("**18**", "18", 1.0), ("18 I think", "18", 1.0),
])
def test_gsm8k_reading(answer, gold, want):
    assert gsm(answer, gold) == want


def test_last_number_spans():
    assert last_number("Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.") == "18"
    assert last_number("2 1/2") == "2\\frac{1}{2}" and last_number("no digits") is None
    assert last_number("60 ft^2 of carpet") == "60" and last_number("the area is 60 cm^{3}.") == "60"


# --------------------------------------------------------------------------------------------------- MATH

@pytest.mark.parametrize("pred,gold", [
    ("5\\mathrm{i}", "5"), ("5\\mathrm{e}", "5"), ("5\\text{ thousand}", "5"), ("5\\text{ million}", "5"),
    ("5i", "5"), ("0.333", "\\frac13"), ("3.14", "\\pi"), ("\\sqrt12", "2"), ("2\\frac{3}{2}", "2"),
    ("(1,2)", "(2,1)"), ("(1,2]", "(1,2)"), ("\\{1,2\\}", "\\{1,2,3\\}"), ("1,2", "1,2,2"), ("\\{1,2\\}", "1,2,3"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}"), ("odd", "dod"),
    ("\\infty-\\infty", "0"), ("\\sqrt{x^2}", "x"), ("(-\\infty,1)\\cup(2,\\infty)", "(-\\infty,1)\\cup[2,\\infty)"),
    ("52", "42_8"), ("x+1", "x-1"), ("3\\sqrt{12}", "3\\sqrt{13}"), ("-\\frac{\\pi}{6}", "\\frac{\\pi}{6}"),
    ("1\u22122", "12"), ("1 2", "12"), ("2^{2^{2^{2^{2}}}}", "4"), ("19_8", "17"),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}"), ("x>3", "x\\ge 3"), ("x>3", "(3,\\infty]"), ("\\sin 30^\\circ", "\\frac12"),
    ("\\log 100", "2"), ("\\sin\\pi/6", "0"), ("\\sin\\frac{\\pi}{12}", "1"), ("5\\text{ cm}", "6"),
])
def test_math_no_false_positives(pred, gold):
    assert not math_equal(pred, gold) and not math_equal(gold, pred)


@pytest.mark.parametrize("pred,gold", [
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),  # `\\ ` is a row break
    ("3 \\cdot \\sqrt{13}", "3\\sqrt{13}"), ("51^{1/2}", "\\sqrt{51}"), ("1/\\sqrt{3}", "\\frac{\\sqrt{3}}{3}"),
    ("-\\pi/6", "-\\frac{\\pi}{6}"), ("\\frac{-\\pi}{6}", "-\\frac{\\pi}{6}"),
    ("\\{3, 1, 2\\}", "\\{1,2,3\\}"), ("\\{1,1,2\\}", "\\{1,2,2\\}"), ("3, 1, 2", "1,2,3"), ("(2,\\infty)\\cup(-\\infty,1)", "(-\\infty,1)\\cup(2,\\infty)"),
    ("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\left[\\begin{matrix}1\\\\2\\end{matrix}\\right]", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("52_{8}", "52_8"), ("30\u00b0", "30^\\circ"), ("30\u00b0", "30"),
    ("5\\text{ cm}", "5"), ("6 inches", "6"), ("10\\text{ cm}^2", "10"),
    ("\\sqrt{117}", "3\\sqrt{13}"), ("\\frac{1}{1+\\sqrt2}", "\\sqrt2-1"), ("(x+1)^2", "x^2+2x+1"), ("4i+3", "3+4i"),
    ("0.\\overline{3}", "\\frac13"), ("\\sqrt[3]{-8}", "-2"), ("y=3+2x", "y=2x+3"), ("x \\in [1, 2)", "[1,2)"),
    ("\u22125", "-5"), ("2\u03c0", "2\\pi"), ("5\u00bd", "5.5"), ("10\u00b2", "100"), ("3\u00d7\u221a13", "3\\sqrt{13}"),
    ("-8+2\\cdot i", "-8+2i"), ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}"),
    ("3 < x", "x > 3"), ("x \\geq 2", "[2,\\infty)"), ("2\\ge x>1", "(1,2]"), ("\\sin\\frac{\\pi}{6}", "\\frac12"),
    ("\\cos(-\\pi/6)", "\\frac{\\sqrt3}{2}"), ("\\tan\\frac{\\pi}{3}", "3^{1/2}"), ("\\log_2 8", "3"), ("\\log_4 2", "0.5"),
    ("\\ln e", "1"), ("\\binom{5}{2}", "10"), ("{5 \\choose 2}", "10"), ("\\left|-3\\right|", "3"),
    ("\\lfloor 2.5 \\rfloor", "2"), ("\\left\\lceil \\frac{5}{2} \\right\\rceil", "3"), ("1.2 \\times 10^{3}", "1200"),
])
def test_math_equivalent_forms(pred, gold):
    assert math_equal(pred, gold) and math_equal(gold, pred)


def test_math_bases():
    """The answer's role matters: a bare 52 answers 52_8 (the subscript left out), 52_8 answers 42 (its value)."""
    assert math_equal("52", "52_8") and math_equal("52_8", "42") and math_equal("52_{8}", "42_{10}")
    assert not math_equal("42", "52_8") and not math_equal("52_8", "52") and not math_equal("52_8", "25_8")


def test_math_extraction():
    assert last_boxed("so \\boxed {12} and") == "12" and last_boxed("\\boxed  {\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed 5$") == "5" and last_boxed("\\boxed {12") is None
    assert math_reward("The answer is $\\boxed {\\frac{3}{4}}$.", "\\frac34") == 1.0
    for block in ("The final answer is $12$.", "The final answer is 12.", "Answer: \\(12\\)", "$$12$$",
                  "So the answer is \\boxed{12}.", "First $x = 3$, so the answer is $12$."):
        assert answer_span(block) in ("12", "12.") or math_equal(answer_span(block), "12"), block
        assert math_reward(f"<think>..</think> <answer>{block}</answer>", "12", "base") == 1.0, block
    assert math_reward("<answer>The final answer is $13$.</answer>", "12", "base") == 0.0


# --------------------------------------------------------------------------------------------------- evaluator

def test_exact_values():
    """Canonical forms against hand-computed values."""
    assert value("\\sqrt{12}").n == {(("#3", Fraction(1, 2)),): 2}  # 2 * 3^(1/2)
    assert value("\\frac{\\sqrt{2}}{\\sqrt{8}}").rational() == Fraction(1, 2)
    assert value("(1+\\sqrt2)(1-\\sqrt2)").rational() == -1 and value("i^3") == value("-i")
    assert value("2^{10}").rational() == 1024 and value("5!").rational() == 120 and value("10^{-3}").rational() == \
        Fraction(1, 1000)
    assert value("\\sqrt[4]{16}").rational() == 2 and value("8^{2/3}").rational() == 4
    assert value("\\pi^2/\\pi") == value("\\pi") and value("x/x").rational() == 1
    for bad in ("1/0", "0^0", "\\sin x", "abc", "2 3", "\\sqrt12", "(x+y+z)^{40}", "9^{9^{9^9}}", "{" * 100 + "1" +
                "}" * 100, "1" * 400, "\\sqrt{1000000007}", "(-8)^{1/3}", "\\infty+1"):
        with pytest.raises(Unsupported):
            value(bad)


def test_hostile_sizes_are_fast():
    cases = ["(x+y+z)^{9}" * 3, "\\sqrt{" * 500 + "2" + "}" * 500, "2^{" * 300 + "2" + "}" * 300, "1+" * 499 + "1",
             "\\frac{1}{1+\\frac{1}{1+\\frac{1}{1+\\frac{1}{1+\\frac{1}{1+\\sqrt{2}}}}}}" * 5, "9" * 999,
             "(" * 499 + ")" * 499, "\\{" + "1," * 400 + "1\\}"]
    for s in cases:
        t0 = time.perf_counter()
        math_equal(s, s + "1")
        last_number(s)
        assert time.perf_counter() - t0 < 2.0, s[:40]  # tens of ms in fact
    t0 = time.perf_counter()
    for text in ["1," * 50_000, "ft^2 " * 20_000, "9" * 100_000, "\\frac{" * 20_000, "- " * 50_000]:
        last_number(text)
        answer_span(text)
    assert time.perf_counter() - t0 < 5.0


def test_normalize_keeps_row_breaks():
    assert normalize_math("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix}1\\\\2\\end{pmatrix}"
    assert normalize_math("1\\ 000") == "1000" and normalize_math("\\boxed") == "\\boxed"


# --------------------------------------------------------------------------------------------------- graders

def test_grader_option():
    with pytest.raises(ValueError, match="unknown grader 'sympy'"):
        check_grader("sympy")
    with pytest.raises(ValueError, match="no grader 'math_verify'"):
        get_task("countdown", grader="math_verify")
    with pytest.raises(ValueError, match="unknown grader"):
        answers_match("1", "1", "nope")
    assert get_task("gsm8k").grader == "builtin" and answers_match("\\frac12", "0.5")


def test_math_verify_grader(monkeypatch):
    pytest.importorskip("math_verify")
    for name, completion, gold in [("gsm8k", "<answer>She makes $18.</answer>", "18"),
                                   ("math", "<answer>\\boxed{\\frac{1}{2}}</answer>", "0.5"),
                                   ("math", "<answer>The final answer is $12$.</answer>", "12")]:
        task = get_task(name, grader="math_verify")
        assert task.grader == "math_verify" and task.reward(completion, {"gold": gold}) == 1.0
        assert task.reward(completion.replace(gold if name == "gsm8k" else "1", "7"), {"gold": gold}) == 0.0
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # as if it were not installed
    with pytest.raises(ValueError, match="pip install math-verify"):
        get_task("math", grader="math_verify")


# --------------------------------------------------------------------------------------------------- countdown

def test_countdown_long_answers_match_tinyzero():
    """The 1,000-character cap is gone: long valid answers score 1.0 as in TinyZero; towers are still refused."""
    task = get_task("countdown")
    row = task.train_rows()[0]  # 44, 19, 35 -> 98
    prompt = task._prompt_text(row)
    for eq in [" " * 5000 + "(44 + 19) + 35", "(" * 150 + "44 + 19 + 35" + ")" * 150, "- - " * 700 + "(44 + 19) + 35",
               "(" * 201 + "44 + 19 + 35" + ")" * 201, "-" * 1500 + "(44 + 19) + 35", "44 + 19 + 35" + " " * 3000,
               "44 ** 19 ** 35", "(44 ** 19) ** 35 - 35", "44 * 19 * 35"]:
        completion = f"</think>\n<answer>{eq}</answer>"
        want = _tinyzero_score(prompt + completion, row["nums"], row["target"]) if "**" not in eq else 0.1
        assert task.reward(completion, row) == want, eq[:60]
    assert eval_arith("-" * 2000 + "5") == 5 and eval_arith("(" * 201 + "1" + ")" * 201) is None
    assert eval_arith("9**9**9**9") is None and eval_arith("2**10") == 1024


# --------------------------------------------------------------------------------------------------- random expressions

def _tree(rng, depth=0):
    """A random expression: ("num", n), ("pi",), ("x",), ("i",) leaves; add, sub, mul, div, pow, sqrt, neg nodes."""
    if depth > 2 or rng.random() < 0.3:
        return rng.choice([("num", rng.randint(0, 12))] * 6 + [("pi",), ("x",), ("i",)])
    op = rng.choice(["add", "sub", "mul", "div", "pow", "sqrt", "neg"])
    if op in ("sqrt", "neg"):
        return (op, _tree(rng, depth + 1))
    return (op, _tree(rng, depth + 1), ("num", rng.randint(0, 3)) if op == "pow" else _tree(rng, depth + 1))


def _value(t):
    """The tree's complex value, computed without the grader; ValueError where it is undefined or a root of < 0."""
    k = t[0]
    if k in ("num", "pi", "x", "i"):
        return {"num": lambda: complex(t[1]), "pi": lambda: complex(math.pi), "x": lambda: 0.7310585786,
                "i": lambda: 1j}[k]()
    if k in ("neg", "sqrt"):
        v = _value(t[1])
        if k == "neg":
            return -v
        if abs(v.imag) > 1e-12 or v.real < 0:
            raise ValueError("root of a negative or complex value")
        return complex(math.sqrt(v.real))
    a, b = _value(t[1]), _value(t[2])
    if k == "div" and abs(b) < 1e-12 or k == "pow" and abs(a) < 1e-12 and b == 0:
        raise ValueError("undefined")
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b if abs(b) >= 1e-12 else 0,
            "pow": a ** int(b.real)}[k]


def _latex(t, rng):
    """One of several spellings of the tree, with the brackets its precedence needs."""
    k = t[0]
    if k in ("num", "pi", "x", "i"):
        return {"num": str(t[1]) if k == "num" else "", "pi": "\\pi", "x": "x", "i": "i"}[k]
    wrap = lambda u, strong: f"({_latex(u, rng)})" if strong else _latex(u, rng)
    if k == "neg":
        return "-" + wrap(t[1], True)
    if k == "sqrt":
        return rng.choice(["\\sqrt{{{}}}", "({})^{{1/2}}", "({})^{{\\frac{{1}}{{2}}}}"]).format(_latex(t[1], rng))
    a, b = t[1], t[2]
    if k == "add":
        return _latex(a, rng) + "+" + wrap(b, b[0] == "neg")
    if k == "sub":
        return _latex(a, rng) + "-" + wrap(b, b[0] in ("add", "sub", "neg"))
    if k == "mul":
        return wrap(a, a[0] in ("add", "sub")) + rng.choice(["\\cdot ", "\\times ", "*"]) + \
            wrap(b, b[0] in ("add", "sub", "neg", "div", "mul"))
    if k == "div":
        if rng.random() < 0.6:
            return f"\\frac{{{_latex(a, rng)}}}{{{_latex(b, rng)}}}"
        return wrap(a, a[0] in ("add", "sub", "div")) + "/" + wrap(b, b[0] not in ("num", "pi", "x", "i", "sqrt"))
    return (_latex(a, rng) if a[0] in ("num", "pi", "x", "i") else f"({_latex(a, rng)})") + f"^{{{_latex(b, rng)}}}"


def _mutate(t, rng):
    k = t[0]
    if k == "num":
        return ("num", t[1] + rng.choice([-1, 1]))
    if k in ("pi", "x", "i"):
        return rng.choice([("num", 3), ("pi",), ("x",), ("i",)])
    if k in ("neg", "sqrt"):
        return rng.choice([t[1], (k, _mutate(t[1], rng))])
    if rng.random() < 0.3:
        return ({"add": "sub", "sub": "add", "mul": "div", "div": "mul", "pow": "mul"}[k], t[1], t[2])
    return (k, _mutate(t[1], rng), t[2]) if rng.random() < 0.5 else (k, t[1], _mutate(t[2], rng))


def test_no_false_positive_on_random_expressions():
    """Random trees, spelled twice (or mutated, then spelled): math_equal may miss an equality (a root of a sum is
    refused) but must never call different values equal. The values come from the trees, not from the grader."""
    seed = int(os.environ.get("NANOR1_TEST_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    agree = 0
    for _ in range(1500):
        t = _tree(rng)
        u = t if rng.random() < 0.5 else _mutate(t, rng)
        try:
            v, w = _value(t), _value(u)
        except (ValueError, OverflowError, ZeroDivisionError):
            continue
        same = abs(v - w) <= 1e-9 * max(1.0, abs(v))
        a, b = _latex(t, rng), _latex(u, rng)
        got = math_equal(a, b)
        assert not got or same, f"seed {seed}: {a!r} == {b!r} but {v} != {w}"
        agree += got == same
    assert agree > 1000, f"seed {seed}: only {agree} verdicts right"  # misses are the refused roots of sums


def test_corpus_has_no_false_positive():
    """Issue 24's rule, kept: on the adversarial corpus (bench/grader_corpus.py, seeded) the built-in grader scores
    no wrong answer 1.0, and countdown rewards equal TinyZero's by construction. bench/bench_graders.py prints the
    full table, with math-verify beside it."""
    from bench.bench_graders import score_builtin
    from bench.grader_corpus import build
    cases = build()
    rewards = [r for r, _ in score_builtin(cases)]
    fp = [c for c, r in zip(cases, rewards) if r == 1.0 and c["truth"] < 1.0]
    assert not fp, [(c["category"], c["gold"], c["completion"][-80:]) for c in fp[:5]]
    cd = [(c, r) for c, r in zip(cases, rewards) if c["task"] == "countdown"]
    assert len(cd) > 1000 and all(r == c["truth"] for c, r in cd)
