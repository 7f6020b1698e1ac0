"""The verifier worker: rewards are computed in a child process that the trainer kills on timeout.

R1-Zero learns from rule-based rewards alone, and a reward function is code that reads model output: a
regex that backtracks, a sympy call that never returns, a bug in a reward written later. None of them may
stall or crash training, so `task.reward` never runs in the trainer's process.
"""
import multiprocessing as mp


def _worker(conn, task):
    """Child process: score each pair of a batch, sending (index, reward, error) after each one."""
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg is None:
            return
        start, completions, rows = msg
        for i, (c, r) in enumerate(zip(completions, rows)):
            try:
                v, err = float(task.reward(c, r)), None
            except Exception as e:  # a reward bug must not stop training; the parent counts these
                v, err = 0.0, f"{type(e).__name__}: {e}"[:300]
            conn.send((start + i, v, err))


class Verifier:
    """Score completions with `task.reward` in a worker process, at most `timeout` seconds per completion.

        with Verifier(task, timeout=5.0) as v:
            rewards = v.score(completions, rows)   # list[float], one per completion

    The worker reports after every completion; when no report comes within `timeout`, the worker is killed
    (SIGKILL: nothing in the child has to cooperate), that completion gets reward 0.0 and a fresh worker scores
    the rest. Rewards that raise also get 0.0. `stats` counts both, for the training log.

    Start method: "forkserver" (Python 3.14's default on Linux). A plain fork of a trainer that runs torch's
    thread pools and CUDA can inherit a lock held by another thread and deadlock; forkserver forks each worker
    from a small clean server process instead, which costs about as little as a fork when a worker is replaced.
    The task object is pickled to the worker, so it must be defined in an importable module (not __main__).
    """

    def __init__(self, task, timeout=5.0, start_timeout=120.0):
        self.task, self.timeout, self.start_timeout = task, timeout, start_timeout
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        self._proc = self._conn = None
        self.stats = {"timeouts": 0, "errors": 0, "last_error": None}

    def _start(self):
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child, self.task), daemon=True)
        self._proc.start()
        child.close()
        # the first start of a forkserver imports the trainer's modules (torch): allow it more time than a score
        try:
            ready = self._conn.poll(self.start_timeout) and self._conn.recv() == "ready"
        except (EOFError, OSError):  # it died while starting, e.g. the task could not be unpickled
            ready = False
        if not ready:
            self._kill()
            raise RuntimeError(f"the verifier worker did not start within {self.start_timeout} s (is the task "
                               f"class {type(self.task).__name__} importable from its module?)")

    def _kill(self):
        self._proc.kill()
        self._proc.join()
        self._conn.close()
        self._proc = self._conn = None

    def score(self, completions, rows):
        """Rewards for `completions[i]` against `rows[i]`, each in [0, 1]; see the class docstring."""
        if len(completions) != len(rows):
            raise ValueError(f"score: {len(completions)} completions but {len(rows)} rows")
        n, out, i = len(completions), [0.0] * len(completions), 0
        if self._proc is not None and not self._proc.is_alive():  # died while idle (e.g. killed for memory)
            self._kill()
        while i < n:  # i: the first completion without a reward yet
            if self._proc is None:
                self._start()
                self._conn.send((i, list(completions[i:]), list(rows[i:])))
            elif i == 0:  # a live worker from an earlier batch
                self._conn.send((0, list(completions), list(rows)))
            try:
                report = self._conn.recv() if self._conn.poll(self.timeout) else None
            except (EOFError, OSError):  # the worker died (e.g. killed for memory): same as a timeout
                report = None
            if report is None:  # completion i hangs: kill the worker, reward 0, go on after it
                self._kill()
                self.stats["timeouts"] += 1
                out[i], i = 0.0, i + 1
                continue
            idx, v, err = report
            out[idx], i = v, idx + 1
            if err is not None:
                self.stats["errors"] += 1
                self.stats["last_error"] = err
        return out

    def close(self):
        if self._proc is not None:
            try:
                self._conn.send(None)  # ask politely, then make sure
            except (OSError, ValueError):
                pass
            self._proc.join(timeout=1.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._conn.close()
            self._proc = self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def score_batch(task, completions, rows, timeout=5.0):
    """One-off `Verifier(task, timeout).score(completions, rows)`; a trainer should keep one Verifier alive."""
    with Verifier(task, timeout=timeout) as v:
        return v.score(completions, rows)
