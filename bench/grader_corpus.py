r"""An adversarial corpus for the reward graders: (task, template, completion, gold, truth, category), seeded.

    python bench/grader_corpus.py                 # counts per task and category
    python bench/grader_corpus.py --out c.jsonl   # the cases, one JSON object a line

Every verdict comes from how the case was built, never from a grader: a value is drawn (a Fraction, c*sqrt(d)/e,
p*pi/q, a+bi, a polynomial, an interval, a matrix...), then written twice. Two spellings of the same value are a
correct answer (truth 1.0); a spelling of a different value is a wrong one (0.0). Countdown truths are TinyZero's
reward by construction: 1.0 for an equation over exactly the given numbers whose exact (Fraction) value is the
target, 0.1 for any other answer in tags on the last line, 0.0 without one.

Conventions the truths follow (the task contracts, stated so a reader can disagree with them):
- the answer is the last \boxed{} (instruct), the last <answer> block (base); inside a GSM8K block, the last number
  or numeric expression ("9 * 2 = 18" answers 18); inside a MATH block, its box, else its last $...$, else the text;
- "2 \frac{1}{2}" and "2 1/2" are mixed numbers (5/2); a bare list "1, 2" is a set of solutions, a tuple "(1, 2)"
  is ordered; "52" answers "52_8" (the base is the question's); "25%" answers 25; units never change a value;
- ambiguous spellings are left out rather than given a verdict: "2 \frac{3}{2}", en-dash signs, "2^10" without
  braces, a number after the final answer ("18 (2 dozen)"), percentages against decimals (25% vs 0.25).
"""
import argparse
import json
import math
import os
import random
import sys
from collections import Counter
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SEED = 24  # issue 24
MINUS = "\u2212"  # the Unicode minus sign


def _case(task, completion, gold, truth, category, template="base", **extra):
    return {"task": task, "template": template, "completion": completion, "gold": gold, "truth": truth,
            "category": category, **extra}


def _wrap(rng, answer, template, think=None):
    """A completion for the R1-Zero (`base`) or boxed-instruct template holding `answer` where the task reads it."""
    think = think if think is not None else rng.choice(["Let me compute. 16 - 3 = 13, and 13 * 2 = 26.", "ok",
                                                        "We have $x^2 = 4$, so two cases. First 3 + 4 = 7.", ""])
    if template == "base":
        return f"<think>{think}</think> <answer>{answer}</answer>"
    tail = rng.choice(["", ".", " That is the answer.", "\n\nSo that is it."])
    return f"{think}\n\nThe final answer is $\\boxed{{{answer}}}$" + tail


def _sign(v, rng, unicode_ok=True):
    """A minus sign for a negative value: ASCII, or now and then U+2212."""
    return (MINUS if unicode_ok and rng.random() < 0.2 else "-") if v < 0 else ""


# ---------------------------------------------------------------------------------------------------------------
# Numbers: spellings of a rational value


def _decimal(v):
    """The terminating decimal of v, or None."""
    q = v.denominator
    for p in (2, 5):
        while q % p == 0:
            q //= p
    if q != 1:
        return None
    digits = 0
    while (v * 10 ** digits).denominator != 1:
        digits += 1
    s = f"{abs(v.numerator) * 10 ** digits // v.denominator:0{digits + 1}d}"
    return (s[:-digits] + "." + s[-digits:]) if digits else s


def rational_forms(v, rng, latex=True):
    """Spellings of a Fraction. GSM8K spellings (latex=False) are the plain-text ones plus \\frac."""
    a, sg = abs(v), _sign(v, rng)
    p, q = a.numerator, a.denominator
    out = []
    if q == 1:
        out += [f"{sg}{p}", f"{sg}{p}.0", f"{sg}{p}.00"]
        if p >= 1000:
            out += [f"{sg}{p:,}"] + ([f"{sg}{p:,}".replace(",", "{,}")] if latex else [])
        if latex and 0 < p < 1000 and sg == "":
            out.append(f"{p:03d}")  # AIME's zero-padded answers
        if latex and p:
            k = rng.randint(2, 9)
            out.append(f"\\frac{{{sg}{p * k}}}{{{k}}}")
    else:
        k = rng.randint(2, 5)
        out += [f"{sg}\\frac{{{p}}}{{{q}}}", f"{sg}\\dfrac{{{p}}}{{{q}}}", f"{sg}{p}/{q}", f"{sg}\\frac{{{p * k}}}{{{q * k}}}"]
        if latex:
            out += [f"\\frac{{-{p}}}{{{q}}}" if sg else f"\\tfrac{{{p}}}{{{q}}}", f"{sg}\\left(\\frac{{{p}}}{{{q}}}\\right)"]
            if p < 10 and q < 10:
                out.append(f"{sg}\\frac{p}{q}")  # TeX's brace-less arguments
        if p > q:
            w, r = divmod(p, q)
            out += [f"{sg}{w}\\frac{{{r}}}{{{q}}}", f"{sg}{w} \\frac{{{r}}}{{{q}}}"] + ([] if latex else [f"{sg}{w} {r}/{q}"])
        if (d := _decimal(a)) is not None:
            out += [f"{sg}{d}"]
    return out


def near_rationals(v, rng):
    """Different values close to v in spelling: off by one, a digit dropped, inverted, negated, truncated."""
    out = {v + 1, v - 1, -v, v * 10, v / 10, v + Fraction(1, 2)}
    if v.denominator > 1:
        out |= {Fraction(v.numerator + 1, v.denominator), Fraction(v.numerator, v.denominator + 1),
                Fraction(math.floor(v * 1000), 1000)}
    if v:
        out.add(1 / v)
    out.discard(v)
    return sorted(out)


def _gsm_gold(v):
    """GSM8K's gold string after '####': an integer or a short decimal."""
    return _decimal(v) if v >= 0 else "-" + _decimal(-v)


def _rand_gsm_value(rng):
    r = rng.random()
    if r < 0.6:
        return Fraction(rng.choice([rng.randint(0, 200), rng.randint(100, 100_000)]))
    if r < 0.75:
        return Fraction(-rng.randint(1, 500))
    return Fraction(rng.randint(1, 40), rng.choice([2, 4, 5, 8, 10]))


# ---------------------------------------------------------------------------------------------------------------
# GSM8K

_GSM_TEXT = ["{a}", "The answer is {a}.", "So she makes ${a} every day.", "{a} dollars", "Total: {a} eggs",
             "Therefore, the total is {a}.", "**{a}**", "\\boxed{{{a}}}", "Answer: {a}", "= {a}", "{a} apples",
             "She needs 4 more, so {a} in total.", "After 3 weeks and 2 days she has {a}.", "\\textbf{{{a}}}",
             "$${a}$$", "x = {a}", "{a}\n", "  {a}  ", "I think it is {a}!", "{a} (final)"]
_GSM_UNITS = ["{a} ft^2", "{a} ft\u00b2", "{a} square feet", "{a} m^2", "{a} cm^{{3}}", "{a} \\text{{ ft}}^2",
              "{a} m2", "{a} km/h", "{a} mph", "{a} miles", "{a} sq ft", "{a} meters^2", "{a} in^2", "{a} hours"]


def gsm8k_cases(rng, n):
    out = []
    for _ in range(n):
        v = _rand_gsm_value(rng)
        gold, template = _gsm_gold(v), rng.choice(["base", "instruct"])
        kind = rng.random()
        if kind < 0.22:  # equivalent spellings, then the same spellings of a different value
            cat = "fraction/mixed/decimal" if v.denominator > 1 else "equivalent form"
            out.append(_case("gsm8k", _wrap(rng, rng.choice(rational_forms(v, rng, latex=False)), template), gold,
                             1.0, cat, template))
            w = rng.choice(near_rationals(v, rng))
            out.append(_case("gsm8k", _wrap(rng, rng.choice(rational_forms(w, rng, latex=False)), template), gold,
                             0.0, "near miss", template))
        elif kind < 0.4:  # text around the answer (base: inside the block; instruct: the box holds the number)
            form = rng.choice(rational_forms(v, rng, latex=False))
            text = rng.choice(_GSM_TEXT).format(a=form)
            comp = _wrap(rng, text, "base") if template == "base" else _wrap(rng, form, template, think=text)
            out.append(_case("gsm8k", comp, gold, 1.0, "text around", template))
        elif kind < 0.55:
            out += _gsm_signs(rng, v, gold, template)
        elif kind < 0.75:
            out += _gsm_traps(rng, template)
        elif kind < 0.88:
            a = abs(v.numerator) if v.denominator == 1 and v else rng.randint(3, 999)
            unit = rng.choice(_GSM_UNITS).format(a=a)
            out.append(_case("gsm8k", _wrap(rng, unit, template), str(a), 1.0, "units", template))
            out.append(_case("gsm8k", _wrap(rng, unit, template), rng.choice(["2", "3"]) if a not in (2, 3) else "7",
                             0.0, "units", template))
        else:
            out += _gsm_arithmetic(rng, template)
    return out + _gsm_adversarial(rng) + _gsm_hostile(rng)


def _gsm_signs(rng, v, gold, template):
    """Unicode and ASCII minus signs, spaces after the sign, a sign in an expression."""
    a = abs(v.numerator) if v.denominator == 1 else rng.randint(1, 999)
    sign = rng.choice([MINUS, "-", "\uff0d", MINUS + " ", "- "])
    b = rng.randint(1, 50)
    return [_case("gsm8k", _wrap(rng, f"{sign}{a}", template), str(-a), 1.0, "signs/unicode", template),
            _case("gsm8k", _wrap(rng, f"{sign}{a}", template), str(a), 0.0, "signs/unicode", template),
            _case("gsm8k", _wrap(rng, f"{a + b} {MINUS} {b} = {a}", template), str(a), 1.0, "signs/unicode", template),
            _case("gsm8k", _wrap(rng, f"{a}", template), str(-a), 0.0, "signs/unicode", template)]


def _gsm_traps(rng, template):
    """Answers whose last digit string is the gold, while the answer's value is something else (issue 24)."""
    g = rng.randint(2, 12)
    k = rng.randint(2, 9)
    n = rng.choice([x for x in range(2, 200) if x % g])  # n/g is not an integer, so never the gold
    traps = [(f"\\frac{{{n}}}{{{g}}}", Fraction(n, g)), (f"{n}/{g}", Fraction(n, g)),
             (f"{k} \\frac{{1}}{{{g}}}", k + Fraction(1, g)), (f"{k} 1/{g}", k + Fraction(1, g)),
             (f"{g}/{g}", Fraction(1)), (f"{n * g}/{g}", Fraction(n)), (f"{n} ft^{min(g, 3)}", Fraction(n)),
             (f"{k}^{{{g}}}", Fraction(k) ** g), (f"{g}^2", Fraction(g * g)), (f"{MINUS}{g}", Fraction(-g)),
             (f"{n} \\times 10^{{{g}}}", Fraction(n * 10 ** g)), (f"\\sqrt{{{g}}}", None), (f"{k}\\pi", None),
             (f"{g}.5", Fraction(2 * g + 1, 2)), (f"{n}\\%", Fraction(n)), (f"{k}\\sqrt{{{g}}}", None)]
    form, val = rng.choice(traps)
    cases = [_case("gsm8k", _wrap(rng, form, template), str(g), 0.0, "fraction/unit traps", template)]
    if val is not None and val.denominator == 1 and abs(val) < 10 ** 9:  # the same answer against its true value
        cases.append(_case("gsm8k", _wrap(rng, form, template), str(val), 1.0, "fraction/unit traps", template))
    elif val is not None and _decimal(val) is not None:
        cases.append(_case("gsm8k", _wrap(rng, form, template), _gsm_gold(val), 1.0, "fraction/unit traps", template))
    return cases


def _gsm_arithmetic(rng, template):
    """Worked answers: the value after the last '=' is the answer; an unevaluated expression has its value."""
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    forms = [(f"{a} * {b} = {a * b}", a * b), (f"{a} \\times {b} = {a * b}", a * b), (f"{a} \u00d7 {b} = {a * b}", a * b),
             (f"{a + b} - {b} = {a}", a), (f"{a} + {b}", a + b), (f"{a * b}/{b}", a), (f"({a} + {b}) * 2", 2 * (a + b)),
             (f"{a} \\cdot {b}", a * b), (f"{a * b} \\div {b} = {a}", a), (f"{a}^2 = {a * a}", a * a)]
    form, val = rng.choice(forms)
    wrong = rng.choice([w for w in (a, b, val + 1, val - 1) if w != val])
    return [_case("gsm8k", _wrap(rng, form, template), str(val), 1.0, "equations", template),
            _case("gsm8k", _wrap(rng, form, template), str(wrong), 0.0, "equations", template)]


# Hand-written attempts to make a last-number reading accept a wrong answer: (answer text, gold, truth).
_GSM_ADVERSARIAL = [
    ("2\u00bd", "2", 0.0), ("2\u00bd", "2.5", 1.0), ("3\u00bc cups", "3", 0.0), ("3 \u00be", "3.75", 1.0),
    ("10\u2076", "10", 0.0), ("10\u2076", "1000000", 1.0), ("5\u00b3", "5", 0.0), ("5\u00b3", "125", 1.0),
    ("18 million", "18", 0.0), ("18 thousand dollars", "18", 0.0), ("2 dozen", "2", 0.0), ("18k", "18", 0.0),
    ("18 and 1/2", "0.5", 0.0), ("18 and 1/2", "18", 0.0), ("18,5", "5", 0.0), ("1,20", "20", 0.0),
    ("18/0", "18", 0.0), ("0/0", "0", 0.0), ("2\u221a2", "2", 0.0), ("2\u03c0", "2", 0.0), ("2 pi", "2", 0.0),
    ("3i", "3", 0.0), ("CO2", "2", 0.0), ("x\u2082 = 5", "5", 1.0), ("H\u2082O", "2", 0.0), ("1e3", "3", 0.0),
    ("\\sqrt{16}", "16", 0.0), ("\\sqrt{16}", "4", 1.0), ("2^{10}", "10", 0.0), ("2^{10}", "1024", 1.0),
    ("18 - 18 + 18", "18", 1.0), ("\\frac{36}{2}", "18", 1.0), ("\\frac{36}{2}", "2", 0.0), ("(-18)", "-18", 1.0),
    ("(-18)", "18", 0.0), ("18.0.", "18", 1.0), ("-(-18)", "18", 1.0), ("1/2 of 36 is 18", "18", 1.0),
    ("\\$18\\text{ per hour}", "18", 1.0), ("18^{\\circ}F", "18", 1.0), ("\\boxed{\\frac{1}{2}}", "2", 0.0),
    ("5 \\text{ thousand}", "5", 0.0), ("12 \\times 10^{3}", "3", 0.0), ("12 \\times 10^{3}", "12000", 1.0),
    ("\uff11\uff18", "18", 1.0), ("\u0661\u0668", "18", 1.0),  # 18 in full-width and Arabic-Indic digits
]


def _gsm_adversarial(rng):
    return [_case("gsm8k", _wrap(rng, a, t), g, truth, "adversarial", t)
            for a, g, truth in _GSM_ADVERSARIAL for t in ("base", "instruct")]


def _gsm_hostile(rng):
    big = "<answer>" * 12_500
    cases = [("<answer>" + "9" * 100_000 + "</answer>", "9", 0.0), ("<answer>" + "1," * 50_000 + "</answer>", "7", 0.0),
             (big + "</answer>", "18", 0.0), ("x" * 100_000 + "<answer>18</answer>", "18", 1.0),
             ("<answer>" + "(" * 5000 + "18" + ")" * 5000 + "</answer>", "18", 1.0),
             ("<answer>9^{9^{9^{9}}}</answer>", "9", 0.0), ("<answer>2^{2^{2^{2}}}</answer>", "65536", 1.0),
             ("<answer>" + "\\frac{" * 20_000 + "</answer>", "1", 0.0), ("<answer>" + "- " * 50_000 + "7</answer>", "7", 1.0),
             ("<answer>" + "ft^2 " * 20_000 + "</answer>", "2", 0.0), ("<answer>1" + "0" * 3000 + "</answer>", "1", 0.0),
             ("<answer>10^{1000000}</answer>", "10", 0.0), ("<answer>" + "1+" * 30_000 + "1</answer>", "30001", 1.0)]
    return [_case("gsm8k", c, g, t, "hostile sizes") for c, g, t in cases]


# ---------------------------------------------------------------------------------------------------------------
# MATH: values beyond rationals. Each `*_forms` returns spellings of one value; the value's float is computed from
# its parameters (never by a grader) and only used to make sure a near miss really differs.

SQUAREFREE = [2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21, 22, 23, 26, 29, 30, 31, 51]


def _coef(c):
    return {1: "", -1: "-"}.get(c, str(c))


def radical_forms(c, d, e, rng):
    """c*sqrt(d)/e, with gcd(c, e) = 1 and e > 0."""
    C, s = _coef(c), "-" if c < 0 else ""
    if e == 1:
        out = [f"{C}\\sqrt{{{d}}}", f"\\sqrt{{{d}}}" if c == 1 else f"{c} \\cdot \\sqrt{{{d}}}",
               f"{s}\\sqrt{{{c * c * d}}}", f"{C}{d}^{{1/2}}" if abs(c) == 1 else f"{c}\\cdot {d}^{{1/2}}",
               f"{C}{d}^{{\\frac{{1}}{{2}}}}" if abs(c) == 1 else f"{c}\\times\\sqrt{{{d}}}",
               f"{C}\\sqrt{{{d}}}".replace("-", MINUS)]
        if d < 10:
            out.append(f"{C}\\sqrt{d}")
        if c > 1:
            out.append(f"\\sqrt{{{d}}}\\cdot {c}")
        return out
    return [f"\\frac{{{C}\\sqrt{{{d}}}}}{{{e}}}", f"{s}\\frac{{{abs(c)}}}{{{e}}}\\sqrt{{{d}}}" if abs(c) != 1 else
            f"{s}\\frac{{\\sqrt{{{d}}}}}{{{e}}}", f"{C}\\sqrt{{{d}}}/{e}", f"\\frac{{{c * d}}}{{{e}\\sqrt{{{d}}}}}",
            f"{s}\\sqrt{{\\frac{{{c * c * d}}}{{{e * e}}}}}", f"\\dfrac{{{C}\\sqrt{{{d}}}}}{{{e}}}"]


def pi_forms(v, rng):
    """v*pi for a rational v != 0."""
    s, a = "-" if v < 0 else "", abs(v)
    p, q = a.numerator, a.denominator
    P = "" if p == 1 else str(p)
    if q == 1:
        return [f"{s}{P}\\pi", f"{s}{P}\\cdot\\pi" if P else f"{s}\\pi", f"{s}{P}\u03c0", f"{s}{P} \\pi"]
    out = [f"{s}\\frac{{{P}\\pi}}{{{q}}}", f"{s}\\frac{{{p}}}{{{q}}}\\pi", f"{s}{P}\\pi/{q}", f"{s}\\dfrac{{{P} \\pi}}{{{q}}}",
           f"{s}{P}\u03c0/{q}"]
    if s:
        out += [f"\\frac{{-{P}\\pi}}{{{q}}}", f"{MINUS}\\frac{{{P}\\pi}}{{{q}}}"]
    return out


def complex_forms(a, b):
    """a + b i, b != 0."""
    def bi(b, lead):
        mag = "" if abs(b) == 1 else str(abs(b))
        return (("-" if b < 0 else ("" if lead else "+")) + mag + "i")
    def num(a, lead):
        return ("" if a < 0 or lead else "+") + str(a)
    if a == 0:
        return [bi(b, True), bi(b, True).replace("i", " i"), f"{b}i" if abs(b) != 1 else bi(b, True)]
    return [f"{a}{bi(b, False)}", f"{bi(b, True)}{num(a, False)}", f"{a} {bi(b, False)[0]} {bi(b, True).lstrip('-')}",
            f"{a}{bi(b, False).replace('i', '')}\\cdot i" if abs(b) != 1 else f"{a}{bi(b, False)}"]


def poly_forms(a, b):
    """(x+a)(x+b) = x^2 + (a+b)x + ab, spelled expanded in three orders and factored in two."""
    S, P = a + b, a * b
    def lin(k, lead=False):
        if k == 0:
            return ""
        return ("-" if k < 0 else ("" if lead else "+")) + ("" if abs(k) == 1 else str(abs(k))) + "x"
    def const(k, lead=False):
        return "" if k == 0 else (("-" if k < 0 else ("" if lead else "+")) + str(abs(k)))
    def fac(k):
        return f"(x{'+' if k > 0 else '-'}{abs(k)})"
    return [f"x^2{lin(S)}{const(P)}", f"{lin(S, True)}{const(P)}+x^2" if S else f"{const(P, True)}+x^2",
            f"{const(P, True)}{lin(S)}+x^2" if P else f"{lin(S, True)}+x^2", fac(a) + fac(b), fac(b) + fac(a),
            f"x\u00b2{lin(S)}{const(P)}"]


def _rand_rational(rng, small=False):
    if rng.random() < 0.5:
        return Fraction(rng.randint(-20 if not small else -9, 40 if not small else 9))
    q = rng.randint(2, 12)
    return Fraction(rng.randint(-30, 30), q)


def _scalar(rng):
    """(category, gold spelling, spellings of the gold value, [spellings of a different value, ...])."""
    kind = rng.random()
    if kind < 0.35:
        v = _rand_rational(rng)
        near = [rational_forms(w, rng) for w in near_rationals(v, rng)[:4]]
        if v.denominator > 1 and _decimal(v) is None:  # 0.333 for 1/3: a rounding, not the value
            near.append([f"{float(v):.3f}", f"{float(v):.4f}"])
        gold = f"\\frac{{{v.numerator}}}{{{v.denominator}}}" if v.denominator > 1 else str(v.numerator)
        return ("fraction/mixed/decimal" if v.denominator > 1 else "equivalent form"), gold, rational_forms(v, rng), near
    if kind < 0.6:
        c, d, e = rng.choice([1, 1, 2, 3, 4, 5, -1, -2, 7]), rng.choice(SQUAREFREE), rng.choice([1, 1, 1, 2, 3, 4, 5, 6])
        g = math.gcd(abs(c), e)
        c, e = c // g, e // g
        x = c * math.sqrt(d) / e
        near = []
        for c2, d2, e2 in [(c + 1, d, e), (c, rng.choice([t for t in SQUAREFREE if t != d]), e), (c, d, e + 1), (-c, d, e)]:
            if c2 and abs(c2 * math.sqrt(d2) / e2 - x) > 1e-9 and math.gcd(abs(c2), e2) == 1:
                near.append(radical_forms(c2, d2, e2, rng))
        near.append([f"{x:.4f}", f"{x:.6f}"])
        if abs(c) > 1 and e == 1:
            near.append([f"\\sqrt{{{abs(c) * d}}}" if c > 0 else f"-\\sqrt{{{abs(c) * d}}}"])
        return "radicals", radical_forms(c, d, e, rng)[0], radical_forms(c, d, e, rng), near
    if kind < 0.75:
        v = Fraction(rng.choice([-1, 1]) * rng.randint(1, 7), rng.choice([1, 2, 3, 4, 6, 12]))
        near = [pi_forms(w, rng) for w in (-v, v + 1, v * 2, v / 2) if w != v and w]
        near += [[f"{float(v) * math.pi:.4f}"], rational_forms(v, rng)]
        return "pi", pi_forms(v, rng)[0], pi_forms(v, rng), near
    if kind < 0.87:
        a, b = rng.randint(-9, 9), rng.choice([-5, -3, -2, -1, 1, 2, 3, 4, 7])
        near = [complex_forms(a2, b2) for a2, b2 in ((a, -b), (b, a), (a + 1, b)) if (a2, b2) != (a, b) and b2]
        return "complex", complex_forms(a, b)[0], complex_forms(a, b), near
    a, b = rng.choice([-5, -3, -2, -1, 1, 2, 3, 4, 6]), rng.choice([-4, -2, -1, 1, 2, 3, 5, 7])
    near = [poly_forms(a2, b2) for a2, b2 in ((-a, b), (a + 1, b), (a, -b)) if {a2, b2} != {a, b} and a2 and b2]
    return "expressions", poly_forms(a, b)[0], poly_forms(a, b), near


def _math_pair(rng, category, gold, good, near, out):
    template = rng.choice(["base", "instruct"])
    out.append(_case("math", _wrap(rng, rng.choice(good), template), gold, 1.0, category, template))
    if near:
        out.append(_case("math", _wrap(rng, rng.choice(rng.choice(near)), template), gold, 0.0, category, template))


_MATH_UNITS = ["{a}\\text{{ cm}}", "{a} \\text{{ inches}}", "{a}\\mbox{{ meters}}", "{a}\\text{{ cm}}^2", "\\${a}",
               "{a} \\text{{ square units}}", "{a}\\%", "{a} \\text{{ degrees}}", "{a}\\ \\text{{cm}}", "{a} cm",
               "{a}\\text{{ units}}", "{a} \\mathrm{{cm}}", "{a}\\text{{ dollars}}"]
_MATH_UNIT_TRAPS = ["{a}\\mathrm{{i}}", "{a}\\mathrm{{e}}", "{a}\\text{{ thousand}}", "{a}\\text{{ million}}",
                    "{a}\\text{{ hundred}}", "{a}i", "{a}\\pi", "{a}\\sqrt{{2}}", "{a}\\text{{i}}", "{a}e",
                    "{a} \\times 10^{{3}}", "{a}^2", "{a}!"]


def _math_units(rng, out):
    a = rng.randint(3, 400)
    template = rng.choice(["base", "instruct"])
    form = rng.choice(_MATH_UNITS).format(a=a)
    gold = rng.choice([str(a), f"{a}\\text{{ cm}}" if "cm" in form else str(a)])
    out.append(_case("math", _wrap(rng, form, template), gold, 1.0, "units", template))
    out.append(_case("math", _wrap(rng, rng.choice(_MATH_UNIT_TRAPS).format(a=a), template), str(a), 0.0, "units",
                     template))
    d = rng.randint(1, 359)
    deg = rng.choice(["{d}^\\circ", "{d}^{{\\circ}}", "{d}\u00b0", "{d}", "{d} \\text{{ degrees}}"])
    out.append(_case("math", _wrap(rng, deg.format(d=d), template), f"{d}^\\circ", 1.0, "units", template))
    out.append(_case("math", _wrap(rng, deg.format(d=d + rng.choice([1, 10, 90])), template), f"{d}^\\circ", 0.0,
                     "units", template))


def _to_base(n, b):
    digits = ""
    while n:
        n, r = divmod(n, b)
        digits = str(r) + digits
    return digits


def _math_bases(rng, out):
    b = rng.randint(2, 9)
    n = rng.randint(b + 1, 2000)
    D = _to_base(n, b)
    gold = rng.choice([f"{D}_{b}", f"{D}_{{{b}}}"])
    template = rng.choice(["base", "instruct"])
    for form in rng.sample([f"{D}_{b}", f"{D}_{{{b}}}", D, f"{D}_{{{b}}}".replace("{", "{ ").replace("}", " }")], 2):
        out.append(_case("math", _wrap(rng, form, template), gold, 1.0, "bases", template))
    wrong = str(n) if str(n) != D else D + "0"  # the decimal value: the question asked for base b
    changed = D[:-1] + str((int(D[-1]) + 1) % b)
    out.append(_case("math", _wrap(rng, rng.choice([wrong, changed + f"_{b}"]), template), gold, 0.0, "bases", template))


_NAMES = ["Evelyn", "Brenda", "Angela", "Carla", "Devon"]


def _math_text(rng, out):
    name, other = rng.sample(_NAMES, 2)
    template = rng.choice(["base", "instruct"])
    out.append(_case("math", _wrap(rng, rng.choice([name, f"\\text{{{name}}}", f"\\textbf{{{name}}}"]), template),
                     f"\\text{{{name}}}", 1.0, "text answers", template))
    out.append(_case("math", _wrap(rng, rng.choice([other, f"\\text{{{other}}}"]), template), f"\\text{{{name}}}", 0.0,
                     "text answers", template))
    letter, wrong = rng.sample("ABCDE", 2)
    out.append(_case("math", _wrap(rng, rng.choice([f"\\text{{({letter})}}", f"({letter})", letter]), template),
                     f"\\text{{({letter})}}", 1.0, "text answers", template))
    out.append(_case("math", _wrap(rng, f"({wrong})", template), f"\\text{{({letter})}}", 0.0, "text answers", template))


def _endpoint_forms(v, rng):
    if v is None:
        return ["\\infty"]
    if v == "-inf":
        return ["-\\infty", MINUS + "\\infty"]
    return rational_forms(v, rng)


def _interval(rng, lo, hi, lb, rb, spaced=None):
    a, b = rng.choice(_endpoint_forms(lo, rng)), rng.choice(_endpoint_forms(hi, rng))
    if spaced if spaced is not None else rng.random() < 0.3:
        return f"\\left{lb} {a}, {b} \\right{rb}"
    return f"{lb}{a}{rng.choice([',', ', '])}{b}{rb}"


def _math_intervals(rng, out):
    lo, hi = sorted(rng.sample(range(-20, 21), 2))
    lo, hi = Fraction(lo, rng.choice([1, 1, 2])), Fraction(hi, 1)
    if lo >= hi:
        lo = hi - 1
    lb, rb = rng.choice("(["), rng.choice(")]")
    if rng.random() < 0.2:
        lo, lb = "-inf", "("
    if rng.random() < 0.2:
        hi, rb = None, ")"
    gold = _interval(rng, lo, hi, lb, rb, spaced=False)
    template = rng.choice(["base", "instruct"])
    good = _interval(rng, lo, hi, lb, rb)
    if rng.random() < 0.2:
        good = "x \\in " + good
    out.append(_case("math", _wrap(rng, good, template), gold, 1.0, "intervals/unions", template))
    flips = []
    if lo != "-inf":
        flips.append(_interval(rng, lo, hi, "[" if lb == "(" else "(", rb))
        flips.append(_interval(rng, lo - 1, hi, lb, rb))
    if hi is not None:
        flips.append(_interval(rng, lo, hi, lb, ")" if rb == "]" else "]"))
    flips = flips or [_interval(rng, "-inf", Fraction(rng.randint(-5, 5)), "(", rng.choice(")]"))]
    out.append(_case("math", _wrap(rng, rng.choice(flips), template), gold, 0.0, "intervals/unions", template))
    if hi is None:  # a union with (c, ...) would overlap: (1, \infty) \cup (40, \infty) is (1, \infty)
        return
    # a union of two disjoint intervals, in either order (c > hi + 1, so no wrong spelling below equals it as a set)
    c = rng.randint(int(hi) + 2, 60)
    second = (c, None) if rng.random() < 0.5 else (c, c + rng.randint(1, 9))
    gold_u = f"{gold}\\cup{_interval(rng, second[0], second[1], '(', ')', spaced=False)}"
    parts = [_interval(rng, lo, hi, lb, rb), _interval(rng, second[0], second[1], "(", ")")]
    rng.shuffle(parts)
    out.append(_case("math", _wrap(rng, " \\cup ".join(parts), template), gold_u, 1.0, "intervals/unions", template))
    shifted = _interval(rng, second[0] + 1, second[1], "(", ")")
    out.append(_case("math", _wrap(rng, rng.choice([parts[0], f"{parts[0]} \\cup {parts[0]}",
                                                    f"{_interval(rng, lo, hi, lb, rb)} \\cup {shifted}"]), template),
                     gold_u, 0.0, "intervals/unions", template))


def _math_collections(rng, out):
    """Sets \\{...\\} and bare lists (any order), tuples (in order)."""
    k = rng.randint(2, 4)
    vals = rng.sample([Fraction(x) for x in range(-12, 13)] + [Fraction(1, 2), Fraction(-3, 4), Fraction(5, 3)], k)
    template = rng.choice(["base", "instruct"])
    spell = lambda vs: [rng.choice(rational_forms(v, rng)) for v in vs]
    canon = lambda v: str(v.numerator) if v.denominator == 1 else f"\\frac{{{v.numerator}}}{{{v.denominator}}}"
    shuffled = rng.sample(vals, k)
    changed = list(shuffled)
    changed[rng.randrange(k)] += rng.choice([1, -1, 2])
    style = rng.random()
    if style < 0.35:
        gold = "\\{" + ",".join(canon(v) for v in vals) + "\\}"
        good = rng.choice(["\\{{{}\\}}", "\\left\\{{ {} \\right\\}}"]).format(", ".join(spell(shuffled)))
        bad = rng.choice(["\\{{{}\\}}".format(", ".join(spell(changed))), "\\{{{}\\}}".format(", ".join(spell(shuffled[1:]))),
                          ", ".join(spell(shuffled[:-1]) or ["0"])])
        cat = "sets/lists/tuples"
    elif style < 0.7:
        gold = ", ".join(canon(v) for v in vals)
        good, bad = ", ".join(spell(shuffled)), rng.choice([", ".join(spell(changed)), ", ".join(spell(shuffled[1:]))])
        cat = "sets/lists/tuples"
    else:
        gold = "(" + ", ".join(canon(v) for v in vals) + ")"
        good = "(" + ", ".join(spell(vals)) + ")"
        rev = vals[::-1] if vals[::-1] != vals else changed
        bad = "(" + ", ".join(spell(rng.choice([rev, changed]))) + ")"
        cat = "sets/lists/tuples"
    out.append(_case("math", _wrap(rng, good, template), gold, 1.0, cat, template))
    out.append(_case("math", _wrap(rng, bad, template), gold, 0.0, cat, template))


def _matrix(rows, rng, env=None, spaced=None):
    env = env or rng.choice(["pmatrix", "bmatrix", "left(", "left["])
    sep = " \\\\ " if (spaced if spaced is not None else rng.random() < 0.5) else "\\\\"
    body = sep.join(" & ".join(rng.choice(rational_forms(v, rng)) for v in row) for row in rows)
    if env == "left(":
        return f"\\left( \\begin{{matrix}} {body} \\end{{matrix}} \\right)"
    if env == "left[":
        return f"\\left[\\begin{{matrix}}{body}\\end{{matrix}}\\right]"
    return f"\\begin{{{env}}} {body} \\end{{{env}}}"


def _math_matrices(rng, out):
    shape = rng.choice([(2, 2), (2, 1), (3, 1), (1, 2), (2, 3)])
    rows = [[Fraction(rng.randint(-9, 9), rng.choice([1, 1, 1, 2])) for _ in range(shape[1])] for _ in range(shape[0])]
    gold = "\\begin{pmatrix}" + "\\\\".join("&".join(
        str(v.numerator) if v.denominator == 1 else f"\\frac{{{v.numerator}}}{{{v.denominator}}}" for v in r)
        for r in rows) + "\\end{pmatrix}"
    template = rng.choice(["base", "instruct"])
    out.append(_case("math", _wrap(rng, _matrix(rows, rng), template), gold, 1.0, "matrices", template))
    transposed = [list(c) for c in zip(*rows)]
    changed = [list(r) for r in rows]
    changed[rng.randrange(shape[0])][rng.randrange(shape[1])] += rng.choice([1, -1, Fraction(1, 2)])
    bad = [changed] + ([transposed] if transposed != rows else [])
    out.append(_case("math", _wrap(rng, _matrix(rng.choice(bad), rng), template), gold, 0.0, "matrices", template))


_MATH_LAYOUTS_BASE = ["The final answer is ${a}$.", "${a}$", "\\boxed{{{a}}}", "\\boxed {{{a}}}", "Answer: \\({a}\\)",
                      "First $x = 3$, so the answer is ${a}$.", " {a} ", "$${a}$$", "So the answer is $\\boxed{{{a}}}$.",
                      "\\[{a}\\]", "The answer is: ${a}$"]


def _math_around(rng, out):
    """The answer inside text: sentences in the <answer> block, spaces in \\boxed {..}, several boxes."""
    category, gold, good, near = _scalar(rng)
    a = rng.choice(good)
    w = rng.choice(rng.choice(near)) if near else None
    if rng.random() < 0.5:
        layout = rng.choice(_MATH_LAYOUTS_BASE)
        out.append(_case("math", f"<think>Compute it.</think> <answer>{layout.format(a=a)}</answer>", gold, 1.0,
                         "text around", "base"))
        if rng.random() < 0.3:  # plain text, no math mode
            out.append(_case("math", f"<think>.</think><answer>The final answer is {a}.</answer>", gold, 1.0,
                             "text around", "base"))
        if w is not None:
            out.append(_case("math", f"<answer>{layout.format(a=w)}</answer>", gold, 0.0, "text around", "base"))
        return
    layouts = [("\\boxed{{{w}}} is wrong; checking again, the answer is \\boxed{{{a}}}.", 1.0),
               ("So $\\boxed {{{a}}}$.", 1.0), ("$\\boxed{{{a}}}$.\n\nThis works because $2 + 2 = 4$.", 1.0),
               ("The answer is \\boxed{{{a}}}, which is about {d}.", 1.0),
               ("First guess \\boxed{{{a}}}, but actually \\boxed{{{w}}}.", 0.0), ("\\boxed{{{w}}}", 0.0)]
    layout, truth = rng.choice(layouts)
    if w is None and "{w}" in layout:
        layout, truth = layouts[1]
    out.append(_case("math", "Let us think.\n" + layout.format(a=a, w=w, d=rng.randint(1, 99)), gold, truth,
                     "text around", "instruct"))


def _math_signs(rng, out):
    n = rng.randint(1, 500)
    v = Fraction(-rng.randint(1, 20), rng.randint(2, 9))
    template = rng.choice(["base", "instruct"])
    for pred, gold, truth in [(f"{MINUS}{n}", f"-{n}", 1.0), (f"{MINUS}{n}", f"{n}", 0.0), (f"-{n}", f"{n}", 0.0),
                              (f"{MINUS}\\frac{{{-v.numerator}}}{{{v.denominator}}}", f"\\frac{{{v.numerator}}}{{{v.denominator}}}", 1.0),
                              (f"{MINUS}\\frac{{{-v.numerator}}}{{{v.denominator}}}", f"\\frac{{{-v.numerator}}}{{{v.denominator}}}", 0.0),
                              (f"3\u00d7\u221a{n}", f"3\\sqrt{{{n}}}", 1.0), (f"\u221a{n}", f"\\sqrt{{{n + 1}}}", 0.0),
                              (f"x\u00b2 + {n}", f"x^2+{n}", 1.0), (f"{n}\u03c0", f"{n}\\pi", 1.0), (f"{n}\u03c0", f"{n}", 0.0),
                              (f"\uff0d{n}", f"-{n}", 1.0), (f"{n}\u00b7\\pi", f"{n}\\pi", 1.0)]:
        if rng.random() < 0.4:
            out.append(_case("math", _wrap(rng, pred, template), gold, truth, "signs/unicode", template))


def _math_equations(rng, out):
    m, c = rng.choice([-3, -2, -1, 2, 3, 5]), rng.randint(-9, 9)
    C = "" if c == 0 else (f"+{c}" if c > 0 else str(c))
    M = _coef(m)
    gold = f"y={M}x{C}"
    goods = [f"y = {M}x {C[:1]} {C[1:]}".rstrip(), f"y={c}+{M}x".replace("+-", "-") if c else f"y={M}x"]
    n = rng.randint(-30, 30)
    template = rng.choice(["base", "instruct"])
    out.append(_case("math", _wrap(rng, rng.choice(goods), template), gold, 1.0, "equations", template))
    wrong = f"y={M}x" if c + 1 == 0 else f"y={M}x{'+' if c + 1 > 0 else ''}{c + 1}"
    out.append(_case("math", _wrap(rng, wrong, template), gold, 0.0, "equations", template))
    out.append(_case("math", _wrap(rng, rng.choice([f"x = {n}", f"x={n}", f"{n}"]), template), str(n), 1.0,
                     "equations", template))
    out.append(_case("math", _wrap(rng, f"x = {n + 1}", template), f"x={n}", 0.0, "equations", template))


_MATH_ADVERSARIAL = [
    ("\\frac{1}{2}x", "\\frac{x}{2}", 1.0), ("\\sqrt{2}^2", "2", 1.0), ("x2", "x^2", 0.0), ("x2", "2x", 0.0),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}", 1.0), ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}", 0.0),
    ("(1,2)", "\\{1,2\\}", 0.0), ("\\infty", "-\\infty", 0.0), ("\\frac{\\sqrt{2}}{2}", "0.7071", 0.0),
    ("0.3\\overline{3}", "\\frac{1}{3}", 1.0), ("\\text{odd}", "\\text{even}", 0.0), ("2\\frac{1}{2}", "1", 0.0),
    ("\\frac{1}{2}\\pi", "\\frac{\\pi}{2}", 1.0), ("\\pi/2", "\\frac{1}{2}", 0.0), ("\\sqrt{x^2}", "x", 0.0),
    ("5\u00bd", "5.5", 1.0), ("10\u00b2", "100", 1.0), ("10\u00b2", "10", 0.0), ("5\\text{ million}", "5000000", 1.0),
    ("\\$5\\text{ billion}", "5", 0.0), ("2e", "2", 0.0), ("e^{i\\pi}", "1", 0.0), ("i^2", "1", 0.0),
    ("\\frac{x^2-1}{x-1}", "x-1", 0.0), ("\\log_2 8", "8", 0.0), ("\\sin\\frac{\\pi}{6}", "\\frac{\\pi}{6}", 0.0),
    ("\\binom{5}{2}", "\\frac{5}{2}", 0.0), ("|-3|", "-3", 0.0), ("\\lfloor 2.5 \\rfloor", "2.5", 0.0),
    ("2^{10}", "210", 0.0), ("\\sqrt{12}", "12", 0.0), ("3\\sqrt{2}", "32", 0.0), ("\\frac{1}{0}", "0", 0.0),
    ("52_8", "52", 0.0), ("52_8", "42", 1.0), ("52_{8}", "42_{10}", 1.0), ("101_2", "5", 1.0), ("101_2", "101", 0.0),
    ("(0,1)\\cup(1,2)", "(0,2)", 0.0), ("[0,1]\\cup[1,2]", "[0,2]", 1.0), ("\\{1,1,2\\}", "\\{1,2,2\\}", 1.0),  # equal as sets
]


def _math_adversarial(rng):
    return [_case("math", _wrap(rng, a, t), g, truth, "adversarial", t)
            for a, g, truth in _MATH_ADVERSARIAL for t in ("base", "instruct")]


def _math_hostile():
    cases = [("\\boxed{" * 50_000, "1", 0.0), ("\\boxed{" + "{" * 50_000 + "1" + "}" * 50_001, "1", 1.0),
             ("<answer>" + "\\frac" * 20_000 + "</answer>", "1", 0.0), ("<answer>" + "1" * 100_000 + "</answer>", "1", 0.0),
             ("\\boxed{2^{2^{2^{2^{2}}}}}", "4", 0.0), ("\\boxed{" + "\\sqrt{" * 500 + "2" + "}" * 500 + "}", "2", 0.0),
             ("x" * 100_000 + "\\boxed{5}", "5", 1.0), ("\\boxed{(x+y+z)^{30}}", "1", 0.0), ("\\boxed{10^{10^{10}}}", "1", 0.0),
             ("\\boxed{" + "1+" * 400 + "1}", "401", 1.0), ("\\boxed{" + "(" * 300 + "7" + ")" * 300 + "}", "7", 1.0),
             ("\\boxed{9^{9^{9^{9}}}}", "9", 0.0), ("\\boxed{\\frac{1}{0}}", "1", 0.0),
             ("\\boxed{" + "\\{1," * 300 + "\\}", "1", 0.0), ("<answer>" + "$" * 50_000 + "</answer>", "1", 0.0)]
    return [_case("math", c, g, t, "hostile sizes", "base" if c.startswith("<answer>") else "instruct")
            for c, g, t in cases]


# Functions with exact values: (spellings, the value's spellings). Angles in radians as multiples of pi.
_FUNCTIONS = [
    (["\\sin\\frac{\\pi}{6}", "\\sin(\\pi/6)", "\\cos\\frac{\\pi}{3}", "\\sin\\left(\\frac{5\\pi}{6}\\right)"], ["\\frac{1}{2}", "0.5"]),
    (["\\cos\\frac{\\pi}{6}", "\\sin\\frac{\\pi}{3}", "\\cos(-\\pi/6)"], ["\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"]),
    (["\\sin\\frac{\\pi}{4}", "\\cos\\frac{\\pi}{4}", "\\cos(\\pi/4)"], ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"]),
    (["\\tan\\frac{\\pi}{3}", "\\tan(\\pi/3)"], ["\\sqrt{3}", "3^{1/2}"]), (["\\tan\\frac{\\pi}{4}", "\\sin\\frac{\\pi}{2}"], ["1"]),
    (["\\cos\\pi", "\\cos(\\pi)", "\\sin\\frac{3\\pi}{2}"], ["-1"]), (["\\tan\\frac{\\pi}{6}"], ["\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt3}"]),
    (["\\log_2 8", "\\log_{2}8", "\\log_3 27", "\\log_{10} 1000"], ["3"]), (["\\log_2 \\frac{1}{4}", "\\log_{3}\\frac{1}{9}"], ["-2"]),
    (["\\ln 1", "\\log_5 1", "\\sin 0"], ["0"]), (["\\log_4 2", "\\log_9 3"], ["\\frac{1}{2}", "0.5"]),
    (["\\binom{5}{2}", "\\dbinom{5}{2}", "\\binom{5}{3}", "{5 \\choose 2}"], ["10"]), (["\\binom{6}{3}"], ["20"]),
    (["|-3|", "\\left|-3\\right|", "\\lvert -3 \\rvert"], ["3"]), (["\\lfloor 2.5 \\rfloor", "\\lfloor \\frac{5}{2} \\rfloor"], ["2"]),
    (["\\lceil 2.5 \\rceil", "\\left\\lceil \\frac{5}{2} \\right\\rceil"], ["3"]), (["e^0", "e^{0}", "\\ln e"], ["1"]),
    (["4!", "24"], ["24", "4!"]), (["\\sqrt[3]{27}", "27^{1/3}", "\\sqrt[4]{81}"], ["3"]), (["2\\sin\\frac{\\pi}{6}"], ["1"]),
    (["\\frac{6!}{4!}", "6 \\cdot 5"], ["30"]), (["1.2 \\times 10^{3}", "1.2 \\cdot 10^3", "12 \\times 10^2"], ["1200"]),
]


def _math_functions(rng, out):
    """Trigonometry at standard angles, logarithms, binomials, |x|, floor and ceiling: the value is known exactly."""
    k = rng.randrange(len(_FUNCTIONS))
    forms, values = _FUNCTIONS[k]
    template = rng.choice(["base", "instruct"])
    pred, gold = rng.choice(forms), rng.choice(values)
    if rng.random() < 0.5:
        pred, gold = gold, pred  # the function in the gold, the value in the answer
    out.append(_case("math", _wrap(rng, pred, template), gold, 1.0, "functions", template))
    others = [j for j in range(len(_FUNCTIONS)) if set(_FUNCTIONS[j][1]) & set(values) == set() and
              set(_FUNCTIONS[j][0]) & set(forms) == set()]
    wrong_forms, _ = _FUNCTIONS[rng.choice(others)]
    out.append(_case("math", _wrap(rng, rng.choice(wrong_forms), template), rng.choice(values), 0.0, "functions", template))


def _math_inequalities(rng, out):
    """x > a in either direction, \\ge spellings, and the interval it describes."""
    a = rng.randint(-9, 9)
    op, flip, iv = rng.choice([(">", "<", "({a},\\infty)"), ("<", ">", "(-\\infty,{a})"), ("\\ge", "\\le", "[{a},\\infty)"),
                               ("\\le", "\\ge", "(-\\infty,{a}]")])
    gold = f"x {op} {a}" if rng.random() < 0.7 else iv.format(a=a)
    alt = {"\\ge": ["\\geq", "\\ge"], "\\le": ["\\leq", "\\le"]}.get(op, [op])
    goods = [f"x{rng.choice(alt)}{a}", f"{a} {flip} x", f"x {rng.choice(alt)} {a}", iv.format(a=a)]
    strict = {">": "\\ge", "<": "\\le", "\\ge": ">", "\\le": "<"}[op]
    bads = [f"x {flip} {a}", f"x {op} {a + 1}", f"x {strict} {a}", f"{a} {op} x"]
    template = rng.choice(["base", "instruct"])
    out.append(_case("math", _wrap(rng, rng.choice(goods), template), gold, 1.0, "inequalities", template))
    out.append(_case("math", _wrap(rng, rng.choice(bads), template), gold, 0.0, "inequalities", template))


def math_cases(rng, n):
    out = []
    builders = [(0.30, None), (0.37, _math_units), (0.40, _math_bases), (0.43, _math_text), (0.51, _math_intervals),
                (0.59, _math_collections), (0.65, _math_matrices), (0.77, _math_around), (0.82, _math_signs),
                (0.86, _math_equations), (0.95, _math_functions), (1.0, _math_inequalities)]
    while len(out) < n:
        r = rng.random()
        fn = next(f for p, f in builders if r < p)
        if fn is None:
            category, gold, good, near = _scalar(rng)
            _math_pair(rng, category, gold, good, near, out)
        else:
            fn(rng, out)
    return out + _math_adversarial(rng) + _math_hostile()


# ---------------------------------------------------------------------------------------------------------------
# Countdown: expressions built as trees, their exact value known; truths are TinyZero's reward by construction

def _cd_rows():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "countdown",
                        "countdown_tasks_3to4_rows0-10001.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _random_tree(rng, nums, ops="+-*/"):
    """(text, exact value or None on division by zero) of a random expression over `nums` in a random order."""
    items = [(str(n), Fraction(n)) for n in rng.sample(nums, len(nums))]
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        (ta, a), (tb, b) = items[i], items[i + 1]
        op = rng.choice(ops)
        if a is None or b is None:
            v = None
        elif op in "/" and b == 0:
            v = None
        else:
            v = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()
        text = f"{ta} {op} {tb}"
        items[i:i + 2] = [(f"({text})" if len(items) > 2 or rng.random() < 0.3 else text, v)]
    return items[0]


def _solve(nums, target, rng, tries=400):
    """A random expression over all of nums whose exact value is the target, or None."""
    for _ in range(tries):
        text, v = _random_tree(rng, nums)
        if v == target:
            return text
    return None


def countdown_cases(rng, n):
    rows, out = _cd_rows(), []
    while len(out) < n:
        row = rng.choice(rows)
        nums, target = row["nums"], row["target"]
        sol = _solve(nums, target, rng)
        if sol is None:
            continue
        c = lambda text, truth, cat: out.append(_case("countdown", text, str(target), truth, cat, nums=nums,
                                                      target=target))
        end = rng.choice(["", "<|im_end|>", "<|endoftext|>"])
        c(f"... so </think>\n<answer>{sol}</answer>{end}", 1.0, "valid")
        c(f"<answer> {sol} </answer>", 1.0, "valid")
        text, v = _random_tree(rng, nums)
        c(f"</think>\n<answer>{text}</answer>", 1.0 if v == target else 0.1, "wrong value")
        a = rng.choice(nums)
        for eq in (f"{sol} + {a} - {a}", f"{sol} * 1", sol.replace(str(a), str(a + 1), 1), f"{a} + {a}"):
            c(f"<answer>{eq}</answer>", 0.1, "wrong numbers")
        layout = rng.choice([("<answer>{}</answer>\nThat is all.", 0.0), ("the answer is {}", 0.0), ("<answer>{}", 0.0),
                             ("<answer>{}</answer> <answer>1 + 2</answer>", 0.1), ("<answer>1 + 2</answer> <answer>{}</answer>", 1.0),
                             ("<answer>{}</answer>\n", 0.0)])
        c(layout[0].format(sol), layout[1], "format")
        c(_long_valid(rng, sol), 1.0, "long valid")
        c(f"<answer>{'(' * rng.randint(201, 260)}{sol}{')' * 300}</answer>", 0.1, "long valid")  # Python: too nested
        c(_hostile_cd(rng, nums, sol), *_HOSTILE_TRUTH)
    return out


def _long_valid(rng, sol):
    """TinyZero accepts these (eval does); nanoR1 used to cap answers at 1,000 characters."""
    kind = rng.randrange(4)
    if kind == 0:
        return f"<answer>{' ' * rng.randint(1000, 20_000)}{sol}</answer>"
    if kind == 1:
        d = rng.randint(100, 190)  # Python's parser allows 200 nested parentheses
        return f"<answer>{'(' * d}{sol}{')' * d}</answer>"
    if kind == 2:
        return f"<answer>{'- - ' * rng.randint(250, 500)}{sol}</answer>"  # an even number of signs: +
    return f"<answer>{sol}{' ' * rng.randint(1000, 5000)}</answer>"


_HOSTILE_TRUTH = (0.1, "hostile sizes")


def _hostile_cd(rng, nums, sol):
    """Answers in tags that are wrong but expensive: towers of powers, huge literals, long runs of operators."""
    a, b = nums[0], nums[1]
    rest = " + ".join(str(x) for x in nums[2:])
    return "<answer>" + rng.choice([f"{a} ** {b} ** {rest}", f"({a} ** {b}) ** ({rest})", "9" * 5000,
                                    f"{a} * {b} * {rest}" + " * 1" * 2000, "-" * 5000 + sol,
                                    f"{a} ** {b} ** {rest} - {a} ** {b} ** {rest}"]) + "</answer>"


# ---------------------------------------------------------------------------------------------------------------

def build(seed=SEED, n_gsm8k=2000, n_math=3000, n_countdown=1200):
    """The corpus: a list of case dicts (see the module docstring), identical for the same arguments."""
    rng = random.Random(seed)
    return gsm8k_cases(rng, n_gsm8k // 2) + math_cases(rng, n_math) + countdown_cases(rng, n_countdown)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", help="write the cases as JSON lines")
    args = p.parse_args()
    cases = build(args.seed)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for c in cases:
                f.write(json.dumps(c) + "\n")
    counts = Counter((c["task"], c["category"], c["truth"]) for c in cases)
    print(f"{len(cases)} cases (seed {args.seed})")
    for (task, cat, truth), k in sorted(counts.items()):
        print(f"  {task:10s} {cat:24s} truth {truth:.1f}: {k}")


if __name__ == "__main__":
    main()
