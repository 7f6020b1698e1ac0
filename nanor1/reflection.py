"""Reflection metrics: how often completions check themselves, and whether the checking pays.

    counts = reflection_counts(texts, correct, task.reflection_markers)   # integers: they add up over ranks
    m = reflection_rates(counts, len(texts))   # the four metrics below (counts summed over ranks first)

A completion *reflects* when it holds at least one marker, matched case-insensitively as a whole word or
phrase: "wait" matches "Wait," and "wait." but not "waiter" or "await"; a space inside a marker matches any
run of whitespace ("check again" matches "check\\nagain"); an inflection is another word ("recheck" does not
match "rechecked"). Over N completions, R of them reflecting:

    reflection_rate              = R / N
    accuracy_reflect             = #(reflect and correct) / R            (None when R = 0)
    accuracy_no_reflect          = #(not reflect and correct) / (N - R)  (None when R = N)
    superficial_reflection_rate  = #(reflect and wrong) / R              (None when R = 0)

"Superficial" is Oat-Zero's term (superficial self-reflection): a self-check that does not end in a right
answer. It equals 1 - accuracy_reflect and keeps its own name because it is the quantity the study tracks.

The default markers, REFLECTION_MARKERS, are the keywords of the two Oat-Zero studies, and the words that
issue 23 names:
- Liu et al. 2025, "There May Not be Aha Moment in R1-Zero-like Training -- A Pilot Study" (sail-sg/oat-zero,
  analysis/eval_self_reflect.py): recheck, rethink, try again, check again, reevaluate, reevaluation,
  re-evaluate, re-examine (the union of its per-model sets);
- Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective" (sail-sg/understand-r1-zero),
  which counts more of the same kind: reassess, reexamine, reconsider, reanalyze, double-check, think again,
  verify again, go over the steps;
- "wait" (R1-Zero's own "aha moment", DeepSeek-R1 paper, Table 3), "re-check", "let me check", "verify",
  "alternatively", "however".
The last four are broad: in ordinary solutions "we verify that x = 2" or "however, x > 0" is no second look
at one's own answer. Oat-Zero confirmed keyword hits with an LLM judge; a fixed list is the cheap half of that,
so read the rate as an upper bound on real self-checking. A task whose texts use other words sets
`Task.reflection_markers` (the synthetic `recheck` task does).
"""
import re

REFLECTION_MARKERS = (
    # Oat-Zero, analysis/eval_self_reflect.py
    "recheck", "rethink", "try again", "check again", "reevaluate", "reevaluation", "re-evaluate", "re-examine",
    # "Understanding R1-Zero-Like Training"
    "reassess", "reexamine", "reconsider", "reanalyze", "double-check", "think again", "verify again",
    "go over the steps",
    # R1-Zero's "aha moment", and the rest of issue 23's list
    "wait", "re-check", "let me check", "verify", "alternatively", "however",
)

_PATTERNS = {}  # markers tuple -> compiled regex (every step asks for the same markers)


def marker_pattern(markers):
    """One case-insensitive regex matching any marker as a whole word (or whole phrase)."""
    markers = tuple(markers)
    if markers not in _PATTERNS:
        if not markers:
            raise ValueError("reflection markers: the list is empty")
        bad = [m for m in markers if not isinstance(m, str) or not re.fullmatch(r"\w(.*\w)?", m, flags=re.S)]
        if bad:  # \b beside a space or a hyphen would not mean "word boundary"
            raise ValueError(f"reflection markers must start and end with a letter or digit, got {bad}")
        # Longest first, so "check again" is tried before a shorter marker that is its prefix.
        parts = [r"\s+".join(map(re.escape, m.split())) for m in sorted(markers, key=len, reverse=True)]
        _PATTERNS[markers] = re.compile(r"\b(?:" + "|".join(parts) + r")\b", flags=re.IGNORECASE)
    return _PATTERNS[markers]


def reflects(text, markers=REFLECTION_MARKERS):
    """Whether `text` holds at least one marker."""
    return marker_pattern(markers).search(text) is not None


def reflection_counts(texts, correct, markers=REFLECTION_MARKERS):
    """The counts the metrics are made of. texts: decoded completions alone (a prompt saying "check again"
    would count for every sample); correct: one bool per text. Counts add up over ranks; rates do not."""
    if len(texts) != len(correct):
        raise ValueError(f"reflection metrics: {len(texts)} texts but {len(correct)} correctness flags")
    pattern = marker_pattern(markers)
    flags = [pattern.search(t) is not None for t in texts]
    return {"reflect": sum(flags), "reflect_correct": sum(f and bool(c) for f, c in zip(flags, correct)),
            "plain_correct": sum(not f and bool(c) for f, c in zip(flags, correct))}


def reflection_rates(counts, n):
    """The four metrics of the module docstring from `reflection_counts` (summed over ranks) and N."""
    r = counts["reflect"]
    return {"reflection_rate": r / n if n else None,
            "accuracy_reflect": counts["reflect_correct"] / r if r else None,
            "accuracy_no_reflect": counts["plain_correct"] / (n - r) if n - r else None,
            "superficial_reflection_rate": (r - counts["reflect_correct"]) / r if r else None}


def reflection_metrics(texts, correct, markers=REFLECTION_MARKERS):
    """The four metrics over one list of completions (None where the subset a metric averages over is empty)."""
    return reflection_rates(reflection_counts(texts, correct, markers), len(texts))
