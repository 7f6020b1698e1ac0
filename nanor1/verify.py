r"""Answer checking: find the answer in model text, normalise it, compare it; all under a hard timeout.

R1-Zero learns from these rules alone, so a verifier that misses a correct answer, accepts a wrong one, or hangs
silently ruins a run. Two defences:
1. Every function here is linear in its input or capped (answers longer than `MAX_ANSWER_CHARS` are wrong, not
   parsed; `eval_arith` refuses an integer power or product larger than `MAX_INT_BITS`; no `eval`, no regex
   with nested quantifiers), so a 100k-character completion costs milliseconds.
2. Rewards are scored in a worker process (`nanor1.verifier.Verifier`) that the trainer *kills* when one answer
   takes longer than its timeout: that answer gets reward 0 and scoring goes on in a fresh worker. The bound
   holds even for a bug in a reward function written later.

Extraction and comparison (the task table in tasks.py says which task uses which):
    last_tag_block(text, "answer")  the content of the last <answer>...</answer>, scanning left to right like
                                    re.finditer(r"<answer>(.*?)</answer>", re.S) in linear time
    last_boxed(text)                the content of the last \boxed{...} (nested braces), or `\boxed 5`
    last_number(text)               the last decimal number, with `$` and thousands commas removed
    normalize_math(s)               \dfrac,\tfrac->\frac, \frac12->\frac{1}{2}, drops \left \right, spaces,
                                    `$`, ^\circ, %, \text{unit} after a number, a trailing `.`, `x =`, outer {} and
                                    parentheses around a single item
    parse_number(s)                 an exact Fraction for 5, -0.50, 025, 1,000, 3/4, \frac{3}{4}, 2\frac{1}{2}
    math_equal(pred, gold)          normalised strings equal, or both numbers and equal as Fractions (0.5 ==
                                    \frac12 == \dfrac{1}{2}; 025 == 25; 27.0 == 27), or both tuples/intervals
                                    with the same brackets whose items are pairwise math_equal
"""

import ast
import operator
import re
from fractions import Fraction

MAX_ANSWER_CHARS = 1000  # no real answer is longer; longer strings are judged wrong without parsing
MAX_INT_BITS = 10_000  # eval_arith refuses integer results past this (about 3000 digits): 9**9**9**9 stops here

# ---------------------------------------------------------------------------------------------------------------
# Extraction


def last_tag_block(text, tag="answer"):
    """Content of the last `<tag>...</tag>` (not stripped), or None.

    Same result as the last match of `re.finditer(r"<tag>(.*?)</tag>", text, re.S)`: matches are taken left to
    right, each closing at the first `</tag>` after its opening. The regex is quadratic on text with many
    openings and no closing tag; two `str.find` calls per match are linear.
    """
    op, cl = f"<{tag}>", f"</{tag}>"
    pos, last = 0, None
    while True:
        s = text.find(op, pos)
        if s < 0:
            return last
        e = text.find(cl, s + len(op))
        if e < 0:  # no closing tag after this opening, so none after any later opening either
            return last
        last = text[s + len(op):e]
        pos = e + len(cl)


def last_boxed(text):
    """Content of the last `\\boxed{...}` (braces matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`), or None.

    Also reads `\\boxed 5` (a space, then one token) and `\\fbox{...}`. An unbalanced last box gives None.
    """
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = i + (len("\\boxed") if text.startswith("\\boxed", i) else len("\\fbox"))
    if text.startswith(" ", j):  # `\boxed 5`: the token up to the next space or `$`
        m = re.match(r" +([^\s$]+)", text[j:j + MAX_ANSWER_CHARS])
        return m.group(1) if m else None
    if not text.startswith("{", j):
        return None
    depth = 0
    for k in range(j, len(text)):  # one pass, stops at the matching brace
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k]
    return None


# A minus sign right after a letter, digit or `)` is a subtraction, not a sign: `20-18` ends in 18, not -18.
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")  # no nested quantifiers: linear


def last_number(text):
    """The last number in `text` as a string without `$` or thousands commas ("$1,200.50" -> "1200.50"), or None."""
    found = _NUMBER.findall(text.replace("$", "").replace("{,}", ","))  # LaTeX's thousands separator `1{,}000`
    if not found:
        return None
    return found[-1].rstrip(",").replace(",", "")


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and comparison


def _brace_args(s, cmd, nargs):
    """Write the brace-less arguments of `cmd` with braces: `\\frac12` -> `\\frac{1}{2}`, `\\sqrt2` -> `\\sqrt{2}`."""
    out, i = [], 0
    while (j := s.find(cmd, i)) >= 0:
        k = j + len(cmd)
        out.append(s[i:k])
        for _ in range(nargs):
            if k < len(s) and s[k] == "{":  # already braced: copy up to the matching brace
                e = _close_brace(s, k)
                out.append(s[k:e])
                k = e
            elif k < len(s) and s[k].isalnum():  # one character, as TeX reads `\\frac12`
                out.append("{" + s[k] + "}")
                k += 1
        i = k
    out.append(s[i:])
    return "".join(out)


def _close_brace(s, k):
    """Index just past the brace matching the `{` at s[k] (len(s) when unbalanced)."""
    depth = 0
    for e in range(k, len(s)):
        depth += {"{": 1, "}": -1}.get(s[e], 0)
        if depth == 0:
            return e + 1
    return len(s)


_UNIT = re.compile(r"^(.*\d)\\(?:text|mbox|mathrm)\{[a-zA-Z ]*\}(?:\^\{?\d\}?)?$")  # `10\text{ cm}^2` -> `10`
_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm|mathbf)\{([^{}]*)\}")  # `\text{Evelyn}` -> `Evelyn`
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def normalize_math(s):
    """A canonical string for a LaTeX answer, so that equal answers written differently compare equal."""
    s = s.strip()
    for a, b in (("{,}", ","), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""), ("^{\\circ}", ""),
                 ("^\\circ", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""), ("\\!", ""), ("\\,", ""),
                 ("\\;", ""), ("\\:", ""), ("\\ ", ""), ("\n", "")):
        s = s.replace(a, b)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)  # \left( -> (, but keep \leftarrow
    s = s.replace(" ", "")
    s = _UNIT.sub(r"\1", s)
    s = _TEXT.sub(r"\1", s)
    s = s.rstrip(".")
    m = re.fullmatch(r"[a-zA-Z]{1,2}=([^=]+)", s)  # `x=5` -> `5` (both sides get the same treatment)
    if m:
        s = m.group(1)
    # outer braces go, and parentheses around a single item: `{5}`, `(\frac{14}{3})` -> the item; `(1,2)` stays
    while len(s) >= 2 and (s[0], s[-1]) in (("{", "}"), ("(", ")")) and _balanced(s[1:-1], s[0] + s[-1]) \
            and (s[0] == "{" or len(_split_top(s[1:-1])) == 1):
        s = s[1:-1]
    s = _brace_args(s, "\\frac", 2)
    s = _brace_args(s, "\\sqrt", 1)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def _balanced(s, pair="{}"):
    depth = 0
    for ch in s:
        depth += {pair[0]: 1, pair[1]: -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


_DEC = r"-?(?:\d+(?:\.\d*)?|\.\d+)"


def parse_number(s):
    """An exact Fraction for a normalised numeric answer, else None (`025` -> 25, `\\frac{-3}{4}`, `2\\frac{1}{2}`)."""
    if len(s) > 100:  # int() of a long digit string is quadratic; no exact answer is this long
        return None
    if re.fullmatch(_DEC, s):
        return Fraction(s)
    m = re.fullmatch(rf"(-?)\\frac\{{({_DEC})\}}\{{({_DEC})\}}", s) or re.fullmatch(rf"(-?)({_DEC})/({_DEC})", s)
    if m and Fraction(m.group(3)) != 0:
        v = Fraction(m.group(2)) / Fraction(m.group(3))
        return -v if m.group(1) else v
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)  # a mixed number, as MATH writes 10\frac{1}{12}
    if m and int(m.group(4)) != 0:
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -v if m.group(1) else v
    return None


def _split_top(s):
    """Split on commas outside any bracket: `(1,(2,3))` inner -> ['1', '(2,3)']."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:k])
            start = k + 1
    return parts + [s[start:]]


def math_equal(pred, gold, _depth=0):
    """True when answer `pred` equals gold answer `gold` (both LaTeX strings); see the module docstring."""
    if pred is None or gold is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    p, g = normalize_math(str(pred)), normalize_math(str(gold))
    if p == g:
        return True
    pn, gn = parse_number(p), parse_number(g)
    if pn is not None and gn is not None:
        return pn == gn
    # tuples, intervals and lists: the same brackets (or none) and the same number of items, compared pairwise
    if _depth < 2 and p[:1] == g[:1] and p[-1:] == g[-1:]:
        strip = 1 if p[:1] in "([{" and p[-1:] in ")]}" else 0
        pp, gp = _split_top(p[strip:len(p) - strip]), _split_top(g[strip:len(g) - strip])
        if len(gp) > 1 and len(pp) == len(gp):
            return all(math_equal(a, b, _depth + 1) for a, b in zip(pp, gp))
    return False


def answers_match(pred, gold, grader="builtin"):
    """`pred` equals `gold` by `grader`: builtin (math_equal) or math_verify (the optional math-verify package,
    Hugging Face's symbolic grader: pip install math-verify)."""
    if grader == "builtin":
        return math_equal(pred, gold)
    if grader != "math_verify":
        raise ValueError(f"grader must be builtin or math_verify, got {grader!r}")
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ValueError("--grader math_verify needs the math-verify package: pip install math-verify") from None
    if pred is None or gold is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))


# ---------------------------------------------------------------------------------------------------------------
# Bounded arithmetic, for countdown equations (TinyZero passes them to `eval` after a character whitelist)

ARITH_CHARS = re.compile(r"^[\d+\-*/().\s]+$")  # TinyZero's whitelist: digits, + - * / ( ) . and spaces
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}  # `**` and `//` pass the whitelist too
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def eval_arith(expr):
    """The value Python's `eval` gives a whitelisted arithmetic string, or None where eval would fail.

    It walks the parsed tree instead of calling eval, so it can refuse, as a failure, integer powers and
    products past MAX_INT_BITS (`9**9**9**9` would otherwise run for ever) and strings over MAX_ANSWER_CHARS.
    Everything else matches eval: int/float semantics, `/` is true division, `//` floor division, a
    negative base to a fractional power is complex (as in Python).
    """
    if len(expr) > MAX_ANSWER_CHARS or not ARITH_CHARS.match(expr):
        return None
    try:
        return _eval_node(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError):
        return None


def _eval_node(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(a, int) and isinstance(b, int):  # the only way to build huge numbers; floats overflow
            if isinstance(node.op, ast.Pow) and b > 0 and abs(a) > 1 and a.bit_length() * b > MAX_INT_BITS:
                raise OverflowError("power too large")
            if isinstance(node.op, ast.Mult) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
                raise OverflowError("product too large")
        return _BINOPS[type(node.op)](a, b)
    raise TypeError(f"not arithmetic: {type(node).__name__}")  # e.g. `2(3)` parses as a call: eval fails too
