r"""Answer checking: find the answer in model text, normalise it, compare it to the gold answer.

R1-Zero learns from these rules alone, and RL amplifies every mistake in them: a false positive (a wrong answer
scored correct) is rewarded and so reinforced, which is worse than a false negative. So the rules refuse when in
doubt: an answer that cannot be read unambiguously scores 0. Two defences against hostile text:
1. Every function here is linear in its input or capped (math answers longer than `MAX_ANSWER_CHARS` are wrong,
   not parsed; the exact evaluator in nanor1/symbolic.py bounds terms, bits and depth; `eval_arith` refuses an
   integer power or product larger than `MAX_INT_BITS`; no `eval`, no regex with nested quantifiers), so a
   100k-character completion costs milliseconds.
2. Rewards are scored in a worker process (`nanor1.verifier.Verifier`) that the trainer *kills* when one answer
   takes longer than its timeout: that answer gets reward 0 and scoring goes on in a fresh worker. The bound
   holds even for a bug in a reward function written later, and for the optional math-verify grader (sympy).

Extraction (each task in nanor1/tasks/ says which it uses):
    last_tag_block(text, "answer")  the content of the last <answer>...</answer>, as re.finditer(r"<answer>(.*?)
                                    </answer>", re.S) would find it, in linear time
    last_boxed(text)                the content of the last \boxed{...} / \boxed {...} (nested braces), `\boxed 5`
    answer_span(block)              what an <answer> block answers: its last \boxed{}, else its last $...$, \(...\)
                                    or \[...\], else the block less "The final answer is" and a final period
    last_number(text)               GSM8K: the final numeric expression of `text` ("56/2", "2 \frac{1}{2}", "-20"
                                    from U+2212 "−20", "60" from "60 ft^2"), None when it is ambiguous
Comparison:
    normalize_math(s)               one spelling per answer: \dfrac -> \frac, \frac12 -> \frac{1}{2}; drops \left
                                    \right, spaces, `$`, degrees, %, a unit word (a list: `cm`, not `i`), `x =`
    math_equal(pred, gold)          equal normalised strings; or matrices entry by entry; unions, sets and bare
                                    lists as multisets; tuples and intervals item by item with the same brackets;
                                    or scalars with the same exact value (nanor1.symbolic: 3\cdot\sqrt{13} =
                                    \sqrt{117}, 1/\sqrt3 = \frac{\sqrt3}{3}, 0.5 = \frac12, but 0.333 != \frac13)
    answers_match(pred, gold, grader)  math_equal ("builtin") or the math-verify package ("math_verify")
Countdown:
    eval_arith(expr)                the value Python's eval gives a whitelisted arithmetic string, without eval
"""

import ast
import importlib.util
import operator
import re
from fractions import Fraction

from nanor1.symbolic import Unsupported, value

MAX_ANSWER_CHARS = 1000  # no real math answer is longer; longer strings are judged wrong without parsing
MAX_INT_BITS = 10_000  # eval_arith refuses integer results past this (about 3000 digits): 9**9**9**9 stops here
GRADERS = ("builtin", "math_verify")

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

    Also reads `\\boxed {...}` (spaces before the brace), `\\boxed 5` (a space, then one token) and `\\fbox{...}`.
    An unbalanced last box gives None.
    """
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = i + (len("\\boxed") if text.startswith("\\boxed", i) else len("\\fbox"))
    k = j
    while k < len(text) and text[k] in " \t":
        k += 1
    if not text.startswith("{", k):  # `\boxed 5`: the token up to the next space or `$`
        m = re.match(r"[ \t]+([^\s${}]+)", text[j:j + MAX_ANSWER_CHARS])
        return m.group(1) if m else None
    e = _close_brace(text, k)
    return text[k + 1:e - 1] if e > 0 else None


def _close_brace(s, k):
    """Index just past the brace matching the `{` at s[k]; -1 when it is never closed. One pass."""
    depth = 0
    for e in range(k, len(s)):
        if s[e] == "{":
            depth += 1
        elif s[e] == "}":
            depth -= 1
            if depth == 0:
                return e + 1
    return -1


_FINAL_PHRASE = re.compile(r"^(?:so,?\s+|therefore,?\s+|thus,?\s+)?(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*", re.I)


def answer_span(block):
    """The answer inside an <answer> block: its last \\boxed{}, else the last math span ($...$, $$...$$, \\(...\\),
    \\[...\\]), else the block itself less a leading "The (final) answer is" and a trailing period."""
    if block is None:
        return None
    boxed = last_boxed(block)
    if boxed is not None:
        return boxed
    spans = [(block.rfind(o), o, c) for o, c in (("\\(", "\\)"), ("\\[", "\\]"))]
    parts = block.replace("\\$", "\x01").split("$")  # \$ is a dollar sign, not math mode
    if len(parts) >= 3:  # text $math$ text ...: the odd parts are math ($$ gives an empty part between)
        math = [p for p in parts[1:len(parts) - 1:2] if p.strip()]
        if math:
            return math[-1].strip().replace("\x01", "\\$")
    for start, o, c in sorted(spans, reverse=True):
        end = block.find(c, start + 2)
        if start >= 0 and end > 0:
            return block[start + 2:end].strip()
    return _FINAL_PHRASE.sub("", block.strip()).rstrip(". ")


# Unicode that answers use: vulgar fractions (2½ is 2 1/2), superscript digits (10⁶ is 10^{6}), the fraction slash.
_VULGAR = {"\u00bd": (1, 2), "\u2153": (1, 3), "\u2154": (2, 3), "\u00bc": (1, 4), "\u00be": (3, 4), "\u2155": (1, 5),
           "\u2156": (2, 5), "\u2157": (3, 5), "\u2158": (4, 5), "\u2159": (1, 6), "\u215a": (5, 6), "\u215b": (1, 8),
           "\u215c": (3, 8), "\u215d": (5, 8), "\u215e": (7, 8)}
_SUPERSCRIPT = re.compile("[\u2070\u00b9\u00b2\u00b3\u2074-\u2079\u207b]+")
_SUP_DIGITS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207b", "0123456789-")


def _unicode_math(s, frac):
    """Vulgar fractions as `frac` formats them, superscripts as ^{...}, U+2044 as `/`."""
    if s.isascii():
        return s
    for ch, (a, b) in _VULGAR.items():
        s = s.replace(ch, frac.format(a, b))
    return _SUPERSCRIPT.sub(lambda m: "^{" + m.group().translate(_SUP_DIGITS) + "}", s).replace("\u2044", "/")


# GSM8K: the last run of arithmetic characters is the answer. These are the pieces of that reading.
_GSM_CHARS = str.maketrans({"\u2212": "-", "\uff0d": "-", "\ufe63": "-",  # Unicode minus signs
                            "\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u00f7": "/", "\u2215": "/",
                            "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2002": " ", "\u2003": " ",
                            "\u00b0": " "})
_GSM_DROP = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"),
             ("\\left", ""), ("\\right", ""), ("{,}", ","), ("\\$", " "), ("$", " "), ("\\%", " "), ("%", " "),
             ("^{\\circ}", " "), ("^\\circ", " "), ("\\!", ""), ("\\,", " "), ("\\;", " "), ("\\:", " "))
_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mbox|mathrm|mathbf)\s*\{([^{}]*)\}")
_RUN = re.compile(r"(?:[0-9.(]|-|\\frac)(?:[0-9.+\-*/^(){} =]|\\frac)*")  # one alternation in a star: linear
_SAFE_BEFORE = set(" \t\n\r$([{\"'=,;*>#~<+.?!")  # after anything else a run is glued to it: x2, √2, 3:30, –20
_MATH_AFTER = re.compile("\\\\[a-zA-Z]|[\u03c0\u221a\u221b\u221e]")  # 2\pi, 3\sqrt{2}, 2π anywhere after the run
_MATH_WORD = re.compile(r"(?:pi|sqrt|i|e|(?i:hundred|thousand|million|billion|trillion|dozens?|score|grand|bn|k|"
                        r"and\s+(?:a|one|two|three)\s+(?:half|halves|thirds?|quarters?)))\b")  # 2 pi, 18 million
_UNIT_WORDS = {"ft", "feet", "foot", "m", "cm", "mm", "km", "in", "inch", "inches", "yd", "yards", "mi", "miles",
               "meters", "metres", "sq", "square", "units", "cubic"}  # only these may carry a ^2 / ^3 or m2
_UNIT_POWER = re.compile(r"\^?\s*\{?\s*[23]\s*\}?\s*")


def last_number(text):
    """GSM8K's answer in `text`: its final numeric expression as a string ("56/2", "-20", "2\\frac{1}{2}"), or None.

    The text is read after Unicode minus signs become `-`, `\\times`/`×` become `*`, `$`, `%` and thousands
    commas go, and \\boxed{}/\\text{} keep their content. The answer is the last run of digits, operators,
    brackets and `\\frac`, after its last `=` ("9 * 2 = 18" gives 18). A unit's exponent is skipped ("60 ft^2"
    gives 60). Refused (None), because a guess could score a wrong answer: a run right after a letter or a command
    (`\\sqrt{2}`, `x2`), one followed by a command (`2\\pi`), a dangling operator (`10^x`), numbers side by side
    ("1 2"; "2 1/2" is the mixed number 5/2), unbalanced brackets.
    """
    s = _unicode_math(text.translate(_GSM_CHARS), " {}/{}")
    for a, b in _GSM_DROP:
        s = s.replace(a, b)
    s = re.sub(r"\\\\|\\ ", " ", s)  # a TeX space or a row break: a space
    for _ in range(3):  # \boxed{\text{18}}: innermost first
        s = _WRAPPER.sub(r" \1 ", s)
    s = re.sub(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))", "", s)  # 1,200,000 -> 1200000; a list 1, 2 stays
    s = re.sub(r"\*\*(?![0-9(])|(?<![0-9)])\*\*", " ", s)  # markdown bold **18**; a power 2**3 stays
    runs = [m for m in _RUN.finditer(s) if any(ch.isdigit() for ch in m.group())]
    while runs:
        m = runs.pop()
        before = s[max(0, m.start() - 40):m.start()].rstrip("{")  # \sqrt{2}: the run starts after the brace
        exponent = re.search(r"\^\s*$", before)
        if re.search(r"[0-9](?:,|\s+(?:and|point|dot)\s*)$", before):  # 18,5 1,20 / 18 and 1/2, 18 point 5
            return None
        if exponent or before and before[-1] not in _SAFE_BEFORE:
            word = re.search(r"([a-zA-Z]*)\s*\^?\s*$", before).group(1).lower()
            if word in _UNIT_WORDS and re.fullmatch(r"[23]\s*\}?\s*\.?\s*", m.group()):
                continue  # ft^2, m2, cm^{3}: the exponent of a unit, not the answer
            return None
        after = s[m.end():]
        glued = not m.group()[-1].isspace() and (re.match(r"[a-zA-Z](?![a-zA-Z])", after) or after[:1].isnumeric())
        # 2x, 5m, 10₂ are glued (18th is fine)
        if _MATH_AFTER.search(after) or _MATH_WORD.match(after.lstrip()) or glued:
            return None  # the answer is not a plain number
        return _clean_run(m.group())
    return None


def _clean_run(run):
    """The value part of an arithmetic run: after the last `=`, ends trimmed, mixed numbers spelled `a\\frac{b}{c}`."""
    span = run.rsplit("=", 1)[-1].strip().rstrip(". ({")  # "18 (final)": the bracket opens text, not a value
    for o, c in ("()", "{}"):  # "(she has 18)": a bracket left open by the text around the run
        while span.startswith(o) and span.count(o) > span.count(c):
            span = span[1:].lstrip()
        while span.endswith(c) and span.count(c) > span.count(o):
            span = span[:-1].rstrip()
    if not span or span[-1] in "+-*/^(" or not _balanced(span, "()") or not _balanced(span, "{}"):
        return None
    m = re.fullmatch(r"(-?)([0-9]+) +([0-9]+)/([0-9]+)", span)
    if m and int(m.group(3)) < int(m.group(4)):  # 2 1/2: a mixed number, with a proper fraction
        span = f"{m.group(1)}{m.group(2)}\\frac{{{m.group(3)}}}{{{m.group(4)}}}"
    if re.search(r"[0-9.] +[-+]?[0-9.]", span):  # "1 2": two numbers, which one?
        return None
    return span


def _balanced(s, pair="{}"):
    depth = 0
    for ch in s:
        depth += {pair[0]: 1, pair[1]: -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


# ---------------------------------------------------------------------------------------------------------------
# Normalisation

_MATH_CHARS = str.maketrans({"\u2212": "-", "\uff0d": "-", "\ufe63": "-", "\u00d7": "\\times ", "\u22c5": "\\cdot ",
                             "\u00b7": "\\cdot ", "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ",
                             "\u00b0": "", "\u00a0": " ", "\u2009": " ",
                             "\u202f": " ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u222a": "\\cup "})
_MATH_DROP = (("{,}", ","), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""), ("^{\\circ}", ""),
              ("^\\circ", ""), ("\\degree", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""), ("\\!", ""),
              ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\lbrace", "\\{"), ("\\rbrace", "\\}"),
              ("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\emptyset", "\\varnothing"))
# Unit words that a number may carry: multi-letter ones anywhere after a number, single letters only in \text{}.
# Not units: `i`, `e` (5\mathrm{i} is 5i), `thousand`, `million` (5\text{ thousand} is 5000).
_UNITS = ("(?:square |sq\\.? |cubic )?(?:cm|mm|km|meters?|metres?|centimeters?|kilometers?|inch(?:es)?|feet|foot|"
          "ft|yards?|yd|miles?|units?|degrees?|dollars?|cents?|seconds?|minutes?|hours?|days?|weeks?|months?|"
          "years?|pounds?|lbs?|ounces?|oz|kg|grams?|kilograms?|liters?|litres?|mL|gallons?|mph|sq|inches)")
_UNIT_TEXT = re.compile(rf"\\(?:text|mbox|mathrm|textrm)\{{\s*(?:{_UNITS}|[msgL])\.?\s*\}}(?:\^\{{?[23]\}}?)?$")
_UNIT_BARE = re.compile(rf"\s{_UNITS}\.?(?:\^\{{?[23]\}}?)?$")
_TEXT = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf|operatorname)\{([^{}]*)\}")  # \text{Evelyn}
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _strip_unit(s):
    """`10\\text{ cm}^2`, `6 inches` -> `10`, `6`: a unit from the list after a number (or `}`/`)`/`\\pi`)."""
    m = _UNIT_TEXT.search(s) or _UNIT_BARE.search(s)
    if m:
        head = s[:m.start()].rstrip()
        if head and (head[-1] in "0123456789})" or head.endswith("\\pi")):
            return head
    return s


def normalize_math(s):
    """A canonical string for a LaTeX answer, so that equal answers written differently compare equal."""
    s = _unicode_math(s.strip().translate(_MATH_CHARS), "\\frac{{{}}}{{{}}}")
    for a, b in _MATH_DROP:
        s = s.replace(a, b)
    s = re.sub(r"\\\\|\\ ", lambda m: m.group() if m.group() == "\\\\" else "", s)  # `\ ` goes; `\\ ` stays
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\[bB]igg?[lr]?(?![a-zA-Z])", "", s)  # \left( -> (, \leftarrow stays
    s = _strip_unit(s)
    s = re.sub(r"\u221a\s*([0-9]+(?:\.[0-9]+)?)", r"\\sqrt{\1}", s).replace("\u221a", "\\sqrt ")  # √13
    s = re.sub(r"(?<![_^][0-9])(?<=[0-9])\s+(?=[0-9])", "~", s)  # "1 2" is not 12; \log_2 8 is \log_28 in TeX
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)  # `\cdot i` must not become `\cdoti`
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = _TEXT.sub(r"\1", s)
    s = re.sub(r"[(\[]?\\begin\{[pbB]?matrix\}", "\\\\begin{pmatrix}", s)  # bmatrix = pmatrix = (matrix)
    s = re.sub(r"\\end\{[pbB]?matrix\}[)\]]?", "\\\\end{pmatrix}", s)
    s = s.rstrip(".")
    s = re.sub(r"^[a-zA-Z]\\in", "", s)  # x \in [1, 2] -> [1, 2]
    m = re.fullmatch(r"[a-zA-Z]{1,2}=([^=]+)", s)  # `x=5` -> `5` (both sides get the same treatment)
    if m:
        s = m.group(1)
    # outer braces go, and parentheses around a single item: `{5}`, `(\frac{14}{3})` -> the item; `(1,2)` stays
    while len(s) >= 2 and (s[0], s[-1]) in (("{", "}"), ("(", ")")) and _balanced(s[1:-1], s[0] + s[-1]) \
            and (s[0] == "{" and "\\choose" not in s or s[0] == "(" and len(_split_top(s[1:-1])) == 1):
        s = s[1:-1]
    s = re.sub(r"^([0-9][0-9A-F]*)_\{([0-9]{1,2})\}$", r"\1_\2", s)  # 52_{8} -> 52_8
    s = _brace_args(s, "\\frac", 2)
    s = _brace_args(s, "\\sqrt", 1)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def _brace_args(s, cmd, nargs):
    """Write one-character arguments with braces: `\\frac12` -> `\\frac{1}{2}`, `\\sqrt2` -> `\\sqrt{2}`.

    `\\sqrt12` stays as it is: TeX reads \\sqrt{1}2 = 2, the writer likely meant \\sqrt{12}; the evaluator refuses it.
    """
    out, i = [], 0
    while (j := s.find(cmd, i)) >= 0:
        k = j + len(cmd)
        out.append(s[i:k])
        if cmd == "\\sqrt" and s[k:k + 2].isdigit():
            i = k
            continue
        for _ in range(nargs):
            if k < len(s) and s[k] == "{":  # already braced: copy up to the matching brace
                e = _close_brace(s, k)
                e = len(s) if e < 0 else e
                out.append(s[k:e])
                k = e
            elif k < len(s) and s[k].isalnum():  # one character, as TeX reads `\\frac12`
                out.append("{" + s[k] + "}")
                k += 1
        i = k
    out.append(s[i:])
    return "".join(out)


_DEC = r"-?(?:\d+(?:\.\d*)?|\.\d+)"


def parse_number(s):
    """An exact Fraction for a plain normalised number (`025` -> 25, `\\frac{-3}{4}`, `2\\frac{1}{2}`), else None.

    The fast path of math_equal: most answers are numbers, and a regex is cheaper than the evaluator."""
    if len(s) > 100 or not s.isascii():  # int() of a long digit string is quadratic; no exact answer is this long
        return None
    if re.fullmatch(_DEC, s):
        return Fraction(s)
    m = re.fullmatch(rf"(-?)\\frac\{{({_DEC})\}}\{{({_DEC})\}}", s) or re.fullmatch(rf"(-?)({_DEC})/({_DEC})", s)
    if m and Fraction(m.group(3)) != 0:
        v = Fraction(m.group(2)) / Fraction(m.group(3))
        return -v if m.group(1) else v
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)  # a mixed number, as MATH writes 10\frac{1}{12}
    if m and int(m.group(3)) < int(m.group(4)):  # proper: 2\frac{3}{2} is refused (2 + 3/2 or 2 * 3/2?)
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -v if m.group(1) else v
    return None


# ---------------------------------------------------------------------------------------------------------------
# Comparison

MAX_ITEMS = 20  # items in a list, set, union or matrix: unordered matching is quadratic in them


def _split_top(s, sep=","):
    """Split on `sep` outside any bracket: `(1,(2,3))` inner -> ['1', '(2,3)']; linear."""
    parts, depth, start, k = [], 0, 0, 0
    while k < len(s):
        ch = s[k]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, k):
            parts.append(s[start:k])
            start = k = k + len(sep)
            continue
        k += 1
    return parts + [s[start:]]


def math_equal(pred, gold):
    """True when answer `pred` equals gold answer `gold` (both LaTeX strings); see the module docstring."""
    if pred is None or gold is None or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    return _equal(normalize_math(str(pred)), normalize_math(str(gold)), 0)


def _equal(p, g, depth):
    if p == g:
        return True
    if depth > 3 or not p or not g:
        return False
    if depth == 0:  # 1\pm\sqrt2 is the list 1+\sqrt2, 1-\sqrt2
        p, g = _plus_minus(p), _plus_minus(g)
    pb, gb = _BASED.fullmatch(p), _BASED.fullmatch(g)
    if gb and not pb:  # 52 answers 52_8: the question asked for base 8, the answer left the subscript out
        return p == gb.group(1)
    if pb:  # 52_8 answers 52_8 and 42 (its value), not 52
        return _based_value(pb) is not None and _based_value(pb) == (_based_value(gb) if gb else parse_number(g))
    if p.startswith("\\begin{pmatrix}") or g.startswith("\\begin{pmatrix}"):
        return _matrix_equal(p, g, depth)
    pu, gu = _split_top(p, "\\cup"), _split_top(g, "\\cup")
    if len(pu) > 1 or len(gu) > 1:  # (-\infty,1)\cup(2,\infty): a union in any order
        return _same_multiset(pu, gu, depth)
    pset, gset = p.startswith("\\{") and p.endswith("\\}"), g.startswith("\\{") and g.endswith("\\}")
    if pset or gset:  # \{1,2\}: a set in any order, \{1,1,2\} = \{1,2\}
        return pset and gset and _same_multiset(_distinct(p[2:-2], depth), _distinct(g[2:-2], depth), depth)
    pr, gr = _relation(p), _relation(g)
    if pr is not None or gr is not None:  # x > 3, 3 < x and (3, \infty) are one answer
        pr, gr = p if pr is None else pr, g if gr is None else gr
        if isinstance(pr, str) and isinstance(gr, str):
            return _equal(pr, gr, depth + 1)
        return isinstance(pr, tuple) and isinstance(gr, tuple) and pr[0] == gr[0] and \
            _equal(pr[1], gr[1], depth + 1) and _equal(pr[2], gr[2], depth + 1)
    if "=" in p or "=" in g:  # y=2x+3 against y=3+2x: side by side (`x=5` lost its `x=` in normalize_math)
        ps, gs = p.split("="), g.split("=")
        return len(ps) == len(gs) and all(_equal(a, b, depth + 1) for a, b in zip(ps, gs))
    if p[:1] in "([" and p[-1:] in ")]" and g[:1] in "([" and g[-1:] in ")]":  # tuples and intervals: in order
        pp, gp = _split_top(p[1:-1]), _split_top(g[1:-1])
        if len(pp) > 1 or len(gp) > 1:
            return p[0] + p[-1] == g[0] + g[-1] and len(pp) == len(gp) and \
                all(_equal(a, b, depth + 1) for a, b in zip(pp, gp))
    pp, gp = _split_top(p), _split_top(g)
    if len(pp) > 1 or len(gp) > 1:  # a bare list, "1, 2": the solutions, in any order
        return _same_multiset(pp, gp, depth)
    return _scalar_equal(p, g)


_REL = re.compile(r">=|<=|\\ge(?![a-zA-Z])|\\le(?![a-zA-Z])|<|>")
_FLIP = {">": "<", "<": ">", "\\ge": "\\le", "\\le": "\\ge"}
_RAY = {">": "({},\\infty)", "\\ge": "[{},\\infty)", "<": "(-\\infty,{})", "\\le": "(-\\infty,{}]"}


def _relation(s):
    """An inequality as the interval it describes when it bounds one letter (x>3, 3<x -> (3,\\infty); 1<x\\le2 ->
    (1,2]), else as (op, greater side, smaller side) with op > or \\ge; None when s has no relation."""
    ops = [(m.start(), m.end(), {">=": "\\ge", "<=": "\\le"}.get(m.group(), m.group())) for m in _REL.finditer(s)]
    if not ops or len(ops) > 2:
        return None if not ops else ("?", s, s)
    cuts = [0] + [k for a, b, _ in ops for k in (a, b)] + [len(s)]
    parts, rel = [s[cuts[k]:cuts[k + 1]].strip() for k in range(0, len(cuts), 2)], [op for _, _, op in ops]
    letter = [bool(re.fullmatch("[a-zA-Z]", x)) for x in parts]
    if len(rel) == 1:
        (a, b), op = parts, rel[0]
        if letter[1] and not letter[0]:
            a, b, op = b, a, _FLIP[op]
        if re.fullmatch("[a-zA-Z]", a) and b:
            return _RAY[op].format(b)
        return (_FLIP[op], b, a) if op in ("<", "\\le") else (op, a, b)
    if letter[1] and not letter[0] and not letter[2] and (rel[0] in "<\\le") == (rel[1] in "<\\le"):
        lo, hi, (o1, o2) = (parts[0], parts[2], rel) if rel[0] in "<\\le" else (parts[2], parts[0], rel[::-1])
        return ("(" if o1 in "<>" else "[") + f"{lo},{hi}" + (")" if o2 in "<>" else "]")
    return ("?", s, s)


_BASED = re.compile(r"([0-9A-F]+)_([0-9]{1,2})")


def _based_value(m):
    """The integer that digits_base spells (52_8 -> 42), or None for a bad base or digit."""
    base = int(m.group(2))
    try:
        return int(m.group(1), base) if 2 <= base <= 16 and len(m.group(1)) <= 64 else None
    except ValueError:
        return None


def _plus_minus(s):
    if len(re.findall(r"\\pm(?![a-zA-Z])", s)) != 1 or "," in s:
        return s
    return re.sub(r"\\pm(?![a-zA-Z])", "+", s) + "," + re.sub(r"\\pm(?![a-zA-Z])", "-", s)


def _same_multiset(ps, gs, depth):
    """Each item of ps pairs with a different, equal item of gs (equality is transitive, so greedy is exact)."""
    if len(ps) != len(gs) or len(ps) > MAX_ITEMS:
        return False
    unused = list(gs)
    for a in ps:
        k = next((k for k, b in enumerate(unused) if _equal(a, b, depth + 1)), None)
        if k is None:
            return False
        unused.pop(k)
    return True


def _distinct(s, depth):
    """The items of a set's inner text, repeats dropped (at most MAX_ITEMS + 1 kept: more fails the match anyway)."""
    out = []
    for a in _split_top(s):
        if len(out) > MAX_ITEMS:
            break
        if not any(_equal(a, b, depth + 1) for b in out):
            out.append(a)
    return out


def _matrix_equal(p, g, depth):
    rows = []
    for s in (p, g):
        if not (s.startswith("\\begin{pmatrix}") and s.endswith("\\end{pmatrix}")):
            return False
        body = s[len("\\begin{pmatrix}"):-len("\\end{pmatrix}")]
        r = [_split_top(row, "&") for row in _split_top(body, "\\\\") if row]
        if sum(len(x) for x in r) > MAX_ITEMS * MAX_ITEMS:
            return False
        rows.append(r)
    (pr, gr) = rows
    return [len(r) for r in pr] == [len(r) for r in gr] and \
        all(_equal(a, b, depth + 1) for x, y in zip(pr, gr) for a, b in zip(x, y))


def _scalar_equal(p, g):
    pn, gn = parse_number(p), parse_number(g)
    if pn is not None and gn is not None:
        return pn == gn
    try:
        return value(p) == value(g)
    except Unsupported:  # a word, a function, a bound: cannot show they are equal
        return False


def answers_match(pred, gold, grader="builtin"):
    """Whether the answer text `pred` matches the gold answer `gold` under `grader`.

    "builtin": math_equal(pred, gold), this module's rules. "math_verify": Hugging Face's math-verify package
    (pip install math-verify), the grader of Open-R1 and TRL's examples: sympy-based, broader (trigonometry,
    logarithms, symbolic simplification) and slower, and it may hang, which the verifier worker's timeout bounds.
    """
    if grader == "builtin":
        return math_equal(pred, gold)
    if grader == "math_verify":
        return math_verify_match(pred, gold)
    raise ValueError(f"unknown grader {grader!r}; choose from {', '.join(GRADERS)}")


def check_grader(grader):
    """A ValueError unless `grader` is known and usable here (math_verify needs its package installed)."""
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; choose from {', '.join(GRADERS)}")
    if grader == "math_verify" and importlib.util.find_spec("math_verify") is None:
        raise ValueError("grader 'math_verify' needs the math-verify package, which nanoR1 does not install: "
                         "pip install math-verify")


def math_verify_match(pred, gold):
    """math-verify's verdict: `verify(parse("$gold$"), parse(answer))`. The answer text is given as written when it
    is a sentence or has math delimiters (math-verify finds the last \\boxed{}, $...$ or number itself), and as
    `$answer$` when it is bare LaTeX or one word (3 \\cdot \\sqrt{13}, which math-verify would read as 3 as written;
    Evelyn)."""
    try:
        import math_verify
    except ImportError:
        raise ImportError("grader 'math_verify' needs the math-verify package: pip install math-verify") from None
    if pred is None or gold is None:
        return False
    bare = re.sub(r"\\(?:begin|end)\{[a-zA-Z]*\}|\\[a-zA-Z]+", " ", pred)  # LaTeX commands are not words
    sentence = re.search(r"\$|\\\(|\\\[|\\boxed", pred) or re.search(r"[a-zA-Z]{2,}\s+\S|\S\s+[a-zA-Z]{2,}", bare)
    gold_parsed = math_verify.parse(f"${gold}$")
    pred_parsed = math_verify.parse(pred if sentence else f"${pred}$")
    return bool(gold_parsed) and bool(pred_parsed) and bool(math_verify.verify(gold_parsed, pred_parsed))


# ---------------------------------------------------------------------------------------------------------------
# Bounded arithmetic, for countdown equations (TinyZero passes them to `eval` after a character whitelist)

ARITH_CHARS = re.compile(r"^[\d+\-*/().\s]+$")  # TinyZero's whitelist: digits, + - * / ( ) . and spaces
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}  # `**` and `//` pass the whitelist too
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def eval_arith(expr):
    """The value Python's `eval` gives a whitelisted arithmetic string, or None where eval would fail.

    It walks the parsed tree instead of calling eval, so it can refuse, as a failure, integer powers and
    products past MAX_INT_BITS: `9**9**9**9` would run eval for ever, and such a number never equals a target.
    Everything else matches eval, at any length: int/float semantics, `/` is true division, `//` floor
    division, a negative base to a fractional power is complex (as in Python). Python's parser itself refuses
    more than 200 nested parentheses and about 3,000 chained signs, for eval and here alike (ast.parse gives up
    a few signs earlier than compile: chains of 2,987 to 2,990 signs differ, in CPython 3.11). Binary operators
    nested past Python's recursion limit fail here and may not in eval; countdown answers, with at most four
    numbers, never nest that deep.
    """
    if not ARITH_CHARS.match(expr):
        return None
    try:
        return _eval_node(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ArithmeticError, RecursionError, MemoryError):
        return None


def _eval_node(node):
    signs = []
    while isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:  # - - - 5: a loop, not recursion
        signs.append(_UNARY[type(node.op)])
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = node.value
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(a, int) and isinstance(b, int):  # the only way to build huge numbers; floats overflow
            if isinstance(node.op, ast.Pow) and b > 0 and abs(a) > 1 and a.bit_length() * b > MAX_INT_BITS:
                raise OverflowError("power too large")
            if isinstance(node.op, ast.Mult) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
                raise OverflowError("product too large")
        v = _BINOPS[type(node.op)](a, b)
    else:
        raise TypeError(f"not arithmetic: {type(node).__name__}")  # e.g. `2(3)` parses as a call: eval fails too
    for op in reversed(signs):
        v = op(v)
    return v
