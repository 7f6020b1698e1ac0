"""Reflection metrics (nanor1/reflection.py) by hand on fixed strings."""
import json

import pytest

from nanor1.reflection import (REFLECTION_MARKERS, marker_pattern, reflection_counts, reflection_metrics,
                               reflection_rates, reflects)
from nanor1.tasks import Task, get_task


@pytest.mark.parametrize("text, expected", [
    ("Wait, 7+5 is 12.", True),  # case-insensitive, punctuation after the word
    ("wait.", True),
    ("Let me recheck: 12.", True),
    ("let me re-check the sum", True),
    ("I will DOUBLE-CHECK it", True),
    ("check\n  again", True),  # a space in a phrase matches any whitespace
    ("Let's go over the steps once more", True),
    ("the waiter brought 12", False),  # whole words only
    ("await the answer", False),
    ("rechecked", False),  # an inflection is another word
    ("checking again", False),
    ("7+5=12, 4+8+1=13.</think> <answer>132</answer>", False),
    ("However, 12 is even.", True),  # issue 23's broad words are in the default list
    ("so we verify it", True),
    ("Alternatively, add the tens first.", True),
    ("Let me check: 12.", True),
    ("verifying", False),
    ("", False),
])
def test_default_markers(text, expected):
    assert reflects(text) == expected


def test_metrics_by_hand():
    texts = ["a. Wait, b.",          # reflects, right
             "a. Let me recheck: a",  # reflects, wrong   (superficial)
             "RETHINK: c",           # reflects, wrong   (superficial)
             "plain",                # right
             "plain again",          # wrong
             "the waiter"]           # right (no marker: "waiter" is not "wait")
    correct = [True, False, False, True, False, True]
    m = reflection_metrics(texts, correct)
    assert m == {"reflection_rate": 3 / 6, "accuracy_reflect": 1 / 3, "accuracy_no_reflect": 2 / 3,
                 "superficial_reflection_rate": 2 / 3}


def test_counts_add_over_ranks():
    """Two ranks' counts, summed, give the metrics of the whole batch (what train.py all-reduces)."""
    texts = ["wait, 12", "12", "recheck: 13", "13", "Wait.", "x"]
    correct = [True, True, False, False, True, False]
    a, b = reflection_counts(texts[:2], correct[:2]), reflection_counts(texts[2:], correct[2:])
    assert a == {"reflect": 1, "reflect_correct": 1, "plain_correct": 1}
    assert b == {"reflect": 2, "reflect_correct": 1, "plain_correct": 0}
    total = {k: float(a[k] + b[k]) for k in a}  # Sums.reduce hands back floats
    assert reflection_rates(total, 6) == reflection_metrics(texts, correct)
    assert reflection_metrics(texts, correct)["reflection_rate"] == 0.5


def test_empty_subsets_are_none_and_serialise():
    m = reflection_metrics(["no marker", "none"], [True, False])
    assert m == {"reflection_rate": 0.0, "accuracy_reflect": None, "accuracy_no_reflect": 0.5,
                 "superficial_reflection_rate": None}
    m = reflection_metrics(["wait", "Wait!"], [True, True])
    assert m["reflection_rate"] == 1.0 and m["accuracy_no_reflect"] is None
    assert m["superficial_reflection_rate"] == 0.0
    assert json.loads(json.dumps(m)) == m  # None -> null: valid JSON, unlike NaN
    assert reflection_metrics([], [])["reflection_rate"] is None


def test_custom_markers():
    # Only the given markers count: "wait" is not among them here.
    m = reflection_metrics(["Hmm, so 12", "Wait, 12", "hmm"], [True, True, False], markers=["hmm"])
    assert m["reflection_rate"] == 2 / 3 and m["accuracy_reflect"] == 0.5 and m["accuracy_no_reflect"] == 1.0
    # longest alternative first: "check again" is one marker, and matching "check" alone would not count it twice
    assert marker_pattern(["check", "check again"]).search("so check again").group(0) == "check again"


@pytest.mark.parametrize("markers, message", [
    ([], "empty"),
    (["wait,"], "start and end"),
    ([" wait"], "start and end"),
])
def test_bad_markers(markers, message):
    with pytest.raises(ValueError, match=message):
        reflection_metrics(["x"], [True], markers)


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 texts but 1"):
        reflection_metrics(["a", "b"], [True])


def test_tasks_carry_markers():
    assert Task.reflection_markers == REFLECTION_MARKERS
    assert get_task("arithmetic").reflection_markers == REFLECTION_MARKERS
    assert all(m == m.lower() for m in REFLECTION_MARKERS) and len(set(REFLECTION_MARKERS)) == len(REFLECTION_MARKERS)


def test_plot_adds_reflection_panels_only_when_logged():
    """scripts/plot.py: old metrics files keep their four panels; runs with reflection metrics get two more."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("plot", Path(__file__).resolve().parents[1] / "scripts" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)  # matplotlib is imported inside main() only
    old = [{"step": 1, "reward": 0.5, "accuracy": 0.4, "response_length": 20, "entropy": 0.3}]
    assert len(plot.choose_panels(old)) == 4
    new = [dict(old[0], **reflection_metrics(["wait, 12", "12"], [True, False]))]
    keys = [k for _, lines in plot.choose_panels(new) for k, _ in lines]
    assert len(plot.choose_panels(new)) == 6 and {"reflection_rate", "superficial_reflection_rate",
                                                  "accuracy_reflect", "accuracy_no_reflect"} <= set(keys)
