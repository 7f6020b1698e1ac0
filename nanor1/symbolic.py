r"""Exact values of LaTeX answers, so that `3 \cdot \sqrt{13}`, `\sqrt{117}` and `13^{1/2} \cdot 3` compare equal.

    value("-\\pi/6") == value("\\frac{-\\pi}{6}")        # True
    value("1/\\sqrt{3}") == value("\\frac{\\sqrt3}{3}")  # True
    value("0.333") == value("\\frac13")                  # False: decimals are exact rationals, no tolerance
    value("\\sin x")                                     # raises Unsupported

The canonical form. A value is a fraction N / D of two sums of monomials with rational coefficients. A monomial is
    x^a y^b ... pi^c e^d i^f  p1^r1 p2^r2 ...
with integer exponents a, b for the one-letter variables (negative allowed), rational exponents c, d for pi and e,
f in {0, 1} for the imaginary unit (i^2 = -1 folds into the coefficient), and, for the radicals, distinct primes
p with exponents r strictly between 0 and 1 (sqrt(12) = 2 * 3^(1/2): the whole part moves into the coefficient).
Two values are equal when N1 D2 and N2 D1 are the same sum, term by term.

Why that is sound and (nearly) complete. Every rewrite above is a true identity, so equal forms mean equal values:
no false positive can come from this module. Conversely, radicals of distinct primes are linearly independent over
the rationals (Besicovitch 1940), pi is transcendental, and variables are indeterminates, so equal values have
equal forms except through identities between pi and e (unknown to mathematics, absent from answers). Fractional
powers are taken only of positive constants: sqrt(x^2) is |x|, not x, so a variable under a root is Unsupported.

Functions are evaluated only where the value is exact and in this form: sin, cos, tan, cot, sec, csc at multiples
of pi/6 and pi/4; log_b x and ln x when rational (log_2 8 = 3, log_4 2 = 1/2); binomials, factorials, |x|, floor
and ceiling of rationals. `\log x` without a base is Unsupported (10 or e?), and so is `\sin 30` (radians).

Bounds (hostile answers): at most MAX_TERMS terms in a sum, MAX_BITS bits in a coefficient, |exponent| <=
MAX_EXP, integers factored only below MAX_FACTOR (trial division: at most 10^4 steps), parse depth MAX_DEPTH.
Anything past a bound raises Unsupported, which the grader reads as "cannot show equal".
"""
import math
import re
from fractions import Fraction

MAX_TERMS = 64  # terms in one sum; (x+y+z)^9 has 55
MAX_BITS = 10_000  # bits of a coefficient's numerator or denominator (about 3000 digits)
MAX_EXP = 1000  # largest |exponent| of a symbol, and of an integer power of a sum (with the term cap)
MAX_FACTOR = 10**8  # a root of a rational needs its prime factors: trial division up to 10^4
MAX_DEPTH = 60  # nested groups, powers and signs
MAX_DIGITS = 300  # a longer number literal is refused (int() of a long string is quadratic)
MAX_FACTORIAL = 300  # 300! has about 2000 bits


class Unsupported(ValueError):
    """The answer is outside what this module evaluates (a word, a function, a bound exceeded)."""


# ---------------------------------------------------------------------------------------------------------------
# Monomials and sums. A monomial is a sorted tuple of (name, exponent); a sum is a dict monomial -> Fraction != 0.

ONE = ()
_UNIT = {ONE: 1}  # the sum 1


def _prime(name):
    return int(name[1:]) if name[0] == "#" else 0


def _normalise(exps):
    """(coefficient, monomial) for a product of name^exponent: i^2 = -1, and the whole part of a prime's exponent
    moves into the coefficient (2^(3/2) = 2 * 2^(1/2)), so every monomial has one spelling."""
    coef, out = Fraction(1), []
    for name, e in exps.items():
        if name == "i":
            e %= 4  # i^-1 = i^3 = -i
            if e >= 2:
                coef, e = -coef, e - 2
        elif p := _prime(name):
            whole = e.numerator // e.denominator  # floor: the rest is in [0, 1)
            if abs(whole) * p.bit_length() > MAX_BITS:
                raise Unsupported("power too large")
            coef, e = coef * Fraction(p) ** whole, e - whole
        if abs(e) > MAX_EXP:
            raise Unsupported("exponent too large")
        if e:
            out.append((name, e))
    return coef, tuple(sorted(out))


def _mono_mul(m1, m2):
    exps = dict(m1)
    for name, e in m2:
        exps[name] = exps.get(name, 0) + e
    return _normalise(exps)


def _check(c):
    if c.numerator.bit_length() > MAX_BITS or c.denominator.bit_length() > MAX_BITS:
        raise Unsupported("coefficient too large")
    return c


def _add(a, b):
    out = dict(a)
    for m, c in b.items():
        v = _check(out.get(m, 0) + c)
        if v == 0:
            out.pop(m, None)
        else:
            out[m] = v
    if len(out) > MAX_TERMS:
        raise Unsupported("too many terms")
    return out


def _mul(a, b):
    if len(a) * len(b) > MAX_TERMS * MAX_TERMS:
        raise Unsupported("too many terms")
    out = {}
    for m1, c1 in a.items():
        for m2, c2 in b.items():
            k, m = _mono_mul(m1, m2)
            out[m] = _check(out.get(m, 0) + k * c1 * c2)
    out = {m: c for m, c in out.items() if c != 0}
    if len(out) > MAX_TERMS:
        raise Unsupported("too many terms")
    return out


class Value:
    """N / D, two sums; a denominator with a single term is folded into N, so D is 1 for most answers."""

    def __init__(self, n, d=None):
        d = {ONE: Fraction(1)} if d is None else d
        if not d:
            raise Unsupported("division by zero")
        if len(d) == 1 and d != _UNIT:  # N / (c m) = N * (1/c) * m^-1
            (m, c), = d.items()
            k, inv = _normalise({name: -e for name, e in m})
            n, d = _mul(n, {inv: k / c}), {ONE: Fraction(1)}
        self.n, self.d = n, d

    def __add__(self, o):
        if self.d == o.d:
            return Value(_add(self.n, o.n), self.d)
        return Value(_add(_mul(self.n, o.d), _mul(o.n, self.d)), _mul(self.d, o.d))

    def __neg__(self):
        return Value({m: -c for m, c in self.n.items()}, self.d)

    def __sub__(self, o):
        return self + (-o)

    def __mul__(self, o):
        return Value(_mul(self.n, o.n), _mul(self.d, o.d))

    def __truediv__(self, o):
        return Value(_mul(self.n, o.d), _mul(self.d, o.n))

    def __eq__(self, o):
        return isinstance(o, Value) and _mul(self.n, o.d) == _mul(o.n, self.d)

    __hash__ = None

    def rational(self):
        """The value as a Fraction when it is a rational constant, else None."""
        if self.d != _UNIT or any(m != ONE for m in self.n):
            return None
        return Fraction(self.n.get(ONE, 0))

    def symbols(self):
        return {name for s in (self.n, self.d) for m in s for name, _ in m}


def const(c):
    c = Fraction(c)
    return Value({ONE: c} if c else {})


def symbol(name):
    return Value({((name, 1),): Fraction(1)})


# ---------------------------------------------------------------------------------------------------------------
# Powers and roots


def _factor(n):
    """Prime factorisation {p: k} of 0 < n < MAX_FACTOR by trial division."""
    if n >= MAX_FACTOR:
        raise Unsupported("number too large to take a root of")
    out, p = {}, 2
    while p * p <= n:
        while n % p == 0:
            out[p], n = out.get(p, 0) + 1, n // p
        p += 1 if p == 2 else 2
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def power(base, exp):
    """base^exp for a rational constant exponent; see the module docstring for which bases take a fractional one."""
    r = exp.rational()
    if r is None:
        raise Unsupported("exponent is not a rational constant")
    if "oo" in base.symbols():
        raise Unsupported("infinity in arithmetic")
    if r.denominator == 1:
        return _int_power(base, int(r))
    if not base.n and r > 0:
        return base  # 0^(p/q) = 0
    if base.d != _UNIT or len(base.n) != 1:
        raise Unsupported("fractional power of a sum or of 0")
    (m, c), = base.n.items()
    if any(name == "i" or len(name) == 1 and name != "e" for name, _ in m):  # sqrt(x^2) = |x|, not x
        raise Unsupported("fractional power of a variable or of i")
    if c < 0 and r.denominator != 2:
        raise Unsupported("odd root of a negative number")  # \sqrt[3]{-8} is handled by the parser
    exps = {name: e * r for name, e in m}
    for p, k in _factor(abs(c.numerator)).items():
        exps[f"#{p}"] = exps.get(f"#{p}", 0) + k * r
    for p, k in _factor(c.denominator).items():
        exps[f"#{p}"] = exps.get(f"#{p}", 0) - k * r
    if c < 0:  # (-a)^(p/2) = a^(p/2) i^p
        exps["i"] = r.numerator
    k, mono = _normalise(exps)
    return Value({mono: k})


def _int_power(base, k):
    if k < 0:
        return _int_power(Value(base.d, base.n), -k)
    if k == 0:
        if not base.n:
            raise Unsupported("0^0")
        return const(1)
    if len(base.n) == 1 and base.d == _UNIT:  # a monomial: multiply its exponents, bits checked first
        (m, c), = base.n.items()
        if abs(c) != 1 and k * max(c.numerator.bit_length(), c.denominator.bit_length()) > MAX_BITS:
            raise Unsupported("power too large")
        coef, mono = _normalise({name: e * k for name, e in m})
        return Value({mono: coef * c ** k})
    if k > MAX_EXP:
        raise Unsupported("power of a sum too large")
    out, sq = const(1), base
    while k:  # square and multiply; MAX_TERMS bounds every step
        if k & 1:
            out = out * sq
        k >>= 1
        if k:
            sq = sq * sq
    return out


# ---------------------------------------------------------------------------------------------------------------
# The parser: recursive descent over tokens, one function per precedence level
#     sum     := ["+"|"-"] product (("+"|"-") product)*
#     product := signed ((("*"|"\cdot"|"\times"|"/"|"\div") signed) | implicit-factor)*      2\pi, 3\sqrt{2}, 2(x+1)
#     signed  := ("+"|"-") signed | power
#     power   := postfix ["^" (signed-exponent)]                                             right-associative
#     postfix := atom "!"*
#     atom    := number | letter | \pi | \infty | \frac{}{} | \sqrt[n]{} | (sum) | {sum}   2\frac{1}{2} is mixed
#              | |sum| | \lfloor sum \rfloor | \lceil sum \rceil | \sin atom | \log_b atom | \binom{}{} | {n \choose k}

_TOKEN = re.compile(r"\\[a-zA-Z]+|[0-9]+(?:\.[0-9]*)?|\.[0-9]+|[a-zA-Z]+|\\.|\S")
_MUL, _DIV = ("*", "\\cdot", "\\times"), ("/", "\\div")
_IGNORED = ("\\left", "\\right", "\\displaystyle", "\\,", "\\!", "\\;", "\\:", "\\ ")


def value(s):
    """The canonical Value of a LaTeX expression (see the module docstring); raises Unsupported when it cannot."""
    if len(s) > 1000:
        raise Unsupported("answer too long")
    toks = [_ALIASES.get(t, t) for t in _TOKEN.findall(s) if t not in _IGNORED]
    p = _Parser(toks)
    v = p.sum()
    if p.i != len(toks):
        raise Unsupported(f"unexpected {toks[p.i]!r}")
    return v


class _Parser:
    def __init__(self, toks):
        self.toks, self.i, self.depth = toks, 0, 0

    def peek(self, k=0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, want=None):
        t = self.peek()
        if t is None or want is not None and t != want:
            raise Unsupported(f"expected {want!r}, got {t!r}")
        self.i += 1
        return t

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported("nested too deeply")

    def sum(self):
        self.enter()
        v = self.product()
        while self.peek() in ("+", "-"):
            op = self.take()
            w = _no_inf(self.product())
            v = _no_inf(v) + w if op == "+" else _no_inf(v) - w
        self.depth -= 1
        return v

    def product(self):
        v = self.signed()
        while True:
            t = self.peek()
            if t in _MUL or t in _DIV:
                self.take()
                w = self.signed()
                v = _no_inf(v) * _no_inf(w) if t in _MUL else _no_inf(v) / _no_inf(w)
            elif t is not None and (t[0].isalpha() or t in _STARTS):  # an implicit product
                v = _no_inf(v) * _no_inf(self.power())
            else:
                return v

    def signed(self):
        if self.peek() in ("+", "-"):
            self.enter()
            neg = self.take() == "-"
            v = self.signed()
            self.depth -= 1
            return -v if neg else v
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() != "^":
            return base
        self.take()
        self.enter()
        exp = self.signed()  # 2^{-1}, 2^-1, 2^3^2 = 2^9
        self.depth -= 1
        return power(base, exp)

    def postfix(self):
        v = self.atom()
        while self.peek() == "!":
            self.take()
            n = v.rational()
            if n is None or n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
                raise Unsupported("factorial of a non-integer or too large")
            out = 1
            for k in range(2, int(n) + 1):
                out *= k
            v = const(out)
        return v

    def group(self):
        """A braced group {...}, or a single token as TeX reads `\\frac12` or `\\sqrt2`."""
        if self.peek() == "{":
            return self.atom()
        t = self.take()
        if t.isdigit():  # `\frac12`: the token "12" is two arguments; take its first digit, leave the rest
            if len(t) > 1:
                self.i -= 1
                self.toks[self.i] = t[1:]
            return const(int(t[0]))
        if len(t) == 1 and t.isalpha() or t in _ATOMS:
            self.i -= 1
            return self.atom()
        raise Unsupported(f"bad argument {t!r}")

    def atom(self):
        t = self.take()
        if t[0].isdigit() or t[0] == ".":
            return self.number(t)
        if t in ("(", "{", "|", "\\lfloor", "\\lceil"):  # a group, |x|, floor, ceiling
            self.enter()
            v = self.sum()
            if t == "{" and self.peek() == "\\choose":  # {n \choose k}
                self.take()
                v = _binom(v, self.sum())
            self.take(_CLOSE[t])
            self.depth -= 1
            return v if t in "({" else _round(t, v)
        if t in ("\\frac", "\\dfrac", "\\tfrac"):
            a = self.group()
            return a / self.group()
        if t == "\\sqrt":
            return self.root()
        if t in _ATOMS:
            return _ATOMS[t]()
        if t in _FUNCTIONS or t in ("\\log", "\\ln", "\\binom"):
            return self.function(t)
        if t.isalpha():
            if len(t) > 1:  # `odd` is a word, not o*d*d (which would equal `dod`)
                raise Unsupported(f"word {t!r}")
            return symbol(t)  # `i` is the imaginary unit, `e` Euler's number: both only ever multiply formally
        raise Unsupported(f"unexpected {t!r}")

    def function(self, name):
        """\\sin x, \\log_b x, \\ln x, \\binom{n}{k}: exact values where they exist (sin(pi/6), log_2 8), else Unsupported."""
        if name == "\\binom":
            n = self.group()
            return _binom(n, self.group())
        base = None
        if name == "\\log":
            if self.peek() != "_":
                raise Unsupported("\\log without a base")  # 10 or e? the writer's convention is unknown
            self.take()
            base = self.group()
        if self.peek() == "^":
            raise Unsupported("power of a function")  # \sin^2 x
        braced = self.peek() in ("(", "{")
        x = self.atom() if braced else self.postfix()
        if not braced and self.peek() in ("/", "^"):
            raise Unsupported("ambiguous argument")  # \sin x/2: sin(x)/2 or sin(x/2)?
        if name == "\\ln":
            return _log(symbol("e"), x)
        return _log(base, x) if name == "\\log" else _trig(name, x)

    def number(self, t):
        if len(t) > MAX_DIGITS:
            raise Unsupported("number too long")
        v = Fraction(t)
        if self.peek() == "\\overline" and "." in t:  # 0.\overline{3} = 1/3: a repeating block after the decimals
            self.take()
            self.take("{")
            rep = self.take()
            self.take("}")
            if not rep.isdigit() or len(rep) > 20:
                raise Unsupported("bad repeating decimal")
            decimals = len(t) - t.index(".") - 1
            v += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** decimals)
        elif "." not in t and self.peek() in ("\\frac", "\\dfrac", "\\tfrac"):  # 2\frac{1}{2}: a mixed number
            m = self.toks[self.i:self.i + 7]
            if len(m) == 7 and (m[1], m[3], m[4], m[6]) == ("{", "}", "{", "}") and m[2].isdigit() \
                    and m[5].isdigit() and int(m[2]) < int(m[5]):  # a proper fraction; 2\frac{3}{2} is refused
                self.i += 7
                return const(v + Fraction(int(m[2]), int(m[5])))
        return const(v)

    def root(self):
        n = 2
        if self.peek() == "[":
            self.take()
            k = self.take()
            self.take("]")
            if not k.isdigit() or not 2 <= int(k) <= 100:
                raise Unsupported("bad root index")
            n = int(k)
        x = self.group()
        r = x.rational()
        if n % 2 and r is not None and r < 0:  # \sqrt[3]{-8} = -2, the real root
            return -power(const(-r), const(Fraction(1, n)))
        return power(x, const(Fraction(1, n)))


def _no_inf(v):
    if "oo" in v.symbols():
        raise Unsupported("infinity in arithmetic")
    return v


_ATOMS = {"\\pi": lambda: symbol("pi"), "\\infty": lambda: symbol("oo")}
_FUNCTIONS = ("\\sin", "\\cos", "\\tan", "\\cot", "\\sec", "\\csc")
_CLOSE = {"(": ")", "{": "}", "|": "|", "\\lfloor": "\\rfloor", "\\lceil": "\\rceil"}
_ALIASES = {"\\lvert": "|", "\\rvert": "|", "\\vert": "|", "\\dbinom": "\\binom", "\\tbinom": "\\binom"}
_STARTS = ("(", "{", "\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\lfloor", "\\lceil", "\\log", "\\ln", "\\binom",
           *_FUNCTIONS, *_ATOMS)  # tokens that begin a factor (`|` does not: it also closes |x|)


# ---------------------------------------------------------------------------------------------------------------
# Functions with exact values

def _binom(n, k):
    n, k = n.rational(), k.rational()
    if n is None or k is None or n.denominator != 1 or k.denominator != 1 or not 0 <= k <= n <= 1000:
        raise Unsupported("binomial of a non-integer or too large")
    return const(math.comb(int(n), int(k)))


def _round(kind, v):
    """|v|, floor(v), ceil(v): for rationals; |v| also for one real term (3\\sqrt{2}, -\\pi)."""
    r = v.rational()
    if kind == "|" and r is None and len(v.n) == 1 and v.d == _UNIT:
        (m, c), = v.n.items()
        if all(_prime(name) or name in ("pi", "e") for name, _ in m):  # a positive real times c
            return Value({m: abs(c)})
    if r is None:
        raise Unsupported("|x|, floor or ceiling of a non-rational")
    return const(abs(r) if kind == "|" else math.floor(r) if kind == "\\lfloor" else math.ceil(r))


# sin(m pi / 12) for m = 0..11: the angles with a value in square roots that answers use (pi/6, pi/4 and their multiples)
_SIN = {0: (0, 1), 2: (1, 4), 3: (2, 4), 4: (3, 4), 6: (1, 1), 8: (3, 4), 9: (2, 4), 10: (1, 4)}  # (n, d): sqrt(n/d)


def _sin(m):
    m %= 24
    sign, m = (-1, m - 12) if m >= 12 else (1, m)
    if m not in _SIN:
        raise Unsupported("sine of an angle without a table value")
    n, d = _SIN[m]
    return const(sign) * power(const(Fraction(n, d)), const(Fraction(1, 2))) if n else const(0)


def _trig(name, x):
    """sin, cos, tan, cot, sec, csc of x = r pi (r rational, 12 r an integer); x = 0 included."""
    r = x.rational()
    if r is None:
        if x.d != _UNIT or set(x.n) != {(("pi", 1),)}:
            raise Unsupported("angle is not a rational multiple of pi")
        r = x.n[(("pi", 1),)]
    elif r != 0:
        raise Unsupported("angle in radians without pi")  # sin 30 is not sin 30 degrees
    m = r * 12
    if m.denominator != 1:
        raise Unsupported("angle without a table value")
    s, c = _sin(int(m)), _sin(int(m) + 6)
    return {"\\sin": lambda: s, "\\cos": lambda: c, "\\tan": lambda: s / c, "\\cot": lambda: c / s,
            "\\sec": lambda: const(1) / c, "\\csc": lambda: const(1) / s}[name]()


def _prime_powers(v):
    """{prime or "e": exponent} when v is a positive product of powers (8, 1/4, sqrt 2, e^3), else None."""
    if v.d != _UNIT or len(v.n) != 1:
        return None
    (m, c), = v.n.items()
    if c <= 0 or any(not _prime(name) and name != "e" for name, _ in m):
        return None
    out = {name: Fraction(e) for name, e in m}
    for p, k in _factor(c.numerator).items():
        out[f"#{p}"] = out.get(f"#{p}", 0) + k
    for p, k in _factor(c.denominator).items():
        out[f"#{p}"] = out.get(f"#{p}", 0) - k
    return {k: e for k, e in out.items() if e}


def _log(base, x):
    """log_base x when it is rational (log_2 8 = 3, log_4 2 = 1/2, ln e^2 = 2), else Unsupported."""
    b, a = _prime_powers(base), _prime_powers(x)
    if not b or a is None or set(a) - set(b):
        raise Unsupported("logarithm without an exact rational value")
    ratios = {a.get(k, 0) / e for k, e in b.items()}
    if len(ratios) != 1:
        raise Unsupported("logarithm without an exact rational value")
    return const(ratios.pop())
