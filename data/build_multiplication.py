"""Build data/multiplication/: TinyZero's second task, two numbers to multiply, row for row as TinyZero made it.

    python data/build_multiplication.py                    # writes data/multiplication/{train,test}.jsonl
    python data/build_multiplication.py --out /tmp/mult    # elsewhere (the test rebuilds and compares bytes)

The recipe is TinyZero's examples/data_preprocess/multiply.py (github.com/Jiayi-Pan/TinyZero) as of commit
3647ec2 ("improve things", 2025-01-21), the last version that runs: the next and final change, e189fa2
("make tasks harder"), turned `randint(0,3)` into `randint(,3)`, a SyntaxError, so the file at HEAD cannot run.
1. Draws. The generator seeded with 1 (TinyZero calls `random.seed(1)`), then N_DRAWS times: num1, num2 =
   two calls of `get_random_num`, each first drawing r = randint(0, 3), then a number in 0..9 (r = 0),
   0..99 (r = 1) or 0..999 (r = 2 or 3). DIGIT = 3 and LESS_OR_EQUAL = True, so the lower bound is 0:
   a quarter of the numbers have at most one digit, a quarter at most two.
2. Dedupe: `list(set((num1, num2, num1 * num2) for each draw))`. The order is CPython's set order over
   tuples of ints, which needs no PYTHONHASHSEED (ints hash to themselves) and was measured identical on
   CPython 3.8 to 3.13 (3.6 and 3.7 order it differently); TinyZero's README installs Python 3.9.
3. Split: train = the first TRAIN_SIZE tuples of that list, test = the last TEST_SIZE.
Each line is {"num1": int, "num2": int, "result": int}, TinyZero's three columns. The prompt and the reward
are in nanor1/tasks/multiplication.py; data/multiplication/SOURCE.md records the counts and checksums.
"""
import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

SEED = 1  # multiply.py: seed(1)
N_DRAWS = 100_000  # multiply.py: N = 100000 (a commented-out line had 1,000,000)
DIGIT = 3  # multiply.py: DIGIT = 3, data_source 'yolo/multiply-3_digit'
TRAIN_SIZE, TEST_SIZE = 32_768, 4_096  # multiply.py: TRAIN_SIZE = 32768, TEST_SIZE = 4096


def random_number(rng):
    """TinyZero's get_random_num with LESS_OR_EQUAL = True: r picks the digit budget, then a uniform draw."""
    r = rng.randint(0, 3)
    digits = {0: DIGIT - 2, 1: DIGIT - 1}.get(r, DIGIT)
    return rng.randint(0, 10 ** digits - 1)


def draws(seed=SEED, n=N_DRAWS):
    """The n (num1, num2, product) triples in draw order; random.Random(seed) gives the same stream as
    TinyZero's `random.seed(seed)` followed by the module-level randint."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a = random_number(rng)
        b = random_number(rng)  # evaluation order matters: num1 is drawn first
        out.append((a, b, a * b))
    return out


def split():
    """(train, test) lists of triples, exactly TinyZero's: set order, then the head and the tail."""
    if sys.implementation.name != "cpython" or sys.version_info < (3, 8):
        raise RuntimeError("the set order that defines TinyZero's split was measured on CPython 3.8-3.13 only; "
                           f"this is {sys.implementation.name} {sys.version.split()[0]}")
    unique = list(set(draws()))
    if len(unique) <= TRAIN_SIZE + TEST_SIZE:  # TinyZero asserts the same
        raise RuntimeError(f"{len(unique)} distinct triples, need more than {TRAIN_SIZE + TEST_SIZE}")
    return unique[:TRAIN_SIZE], unique[-TEST_SIZE:]


def write_jsonl(path, triples):
    """One JSON object per line; returns the file's sha256 so the caller can report it."""
    text = "".join(json.dumps({"num1": a, "num2": b, "result": c}) + "\n" for a, b, c in triples)
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "multiplication"), help="output folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = split()
    sums = {}
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        sums[name] = write_jsonl(out / name, rows)
        print(f"{out / name}: {len(rows)} rows, sha256 {sums[name]}")
    return sums


if __name__ == "__main__":
    main()
