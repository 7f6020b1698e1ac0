"""The verifier worker: rewards are computed in a child process that the trainer kills on timeout.

R1-Zero learns from rule-based rewards alone, and a reward function is code that reads model output: a
regex that backtracks, a sympy call that never returns, a bug in a reward written later. None of them may
stall or crash training, so `task.reward` never runs in the trainer's process.

Three limits bound what a reward can cost:
- time: `timeout` seconds per completion (the worker is SIGKILLed, that completion scores 0), and an optional
  `budget_s` per `score` call, after which the remaining completions score 0 without being run;
- memory: the worker's address space may grow by at most `memory_limit` bytes (RLIMIT_AS); an allocation
  past it raises MemoryError inside the reward, which then scores 0 and counts as an error;
- lifetime: the worker dies with the trainer. A SIGKILLed trainer runs no clean-up code, and the worker's
  parent is the forkserver, which lives as long as any of its children does; so each worker forks a tiny
  guard that blocks on a pipe whose only writer is the trainer. When the trainer dies, the pipe reads EOF and
  the guard SIGKILLs the worker: a signal from another process, so it works even while the reward is stuck
  in C code that holds the GIL (a backtracking regex), where a watchdog thread inside the worker never runs.
"""
import multiprocessing as mp
import os
import select
import signal
import sys
import time

try:
    import resource  # Unix only
except ImportError:  # pragma: no cover
    resource = None

MEMORY_LIMIT = 2 << 30  # bytes a reward may add to the worker's address space: 2 GiB, 100x what ours need


def _worker(conn, lifeline, task, memory_limit):
    """Child process: score each pair of a batch, sending (index, reward, error) after each one."""
    _start_guard(lifeline, conn)
    _cap_memory(memory_limit)
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
            except MemoryError:  # the allocation that failed is released with the reward's frames
                v, err = 0.0, f"MemoryError: the reward needed more than the verifier's memory_limit " \
                              f"({memory_limit / 2**30:.2f} GiB above the worker's size at start)"
            except Exception as e:  # a reward bug must not stop training; the parent counts these
                v, err = 0.0, f"{type(e).__name__}: {e}"[:300]
            conn.send((start + i, v, err))


def _start_guard(lifeline, conn):
    """Fork a guard process that SIGKILLs this worker when the trainer's end of `lifeline` closes.

    The guard needs no Python code to run in the worker, so it works whatever the reward is doing. It exits
    with the worker: at once on Linux (PR_SET_PDEATHSIG), else within a second (it sees its parent change)."""
    if not hasattr(os, "fork"):  # no fork (Windows): no guard
        return
    worker = os.getpid()
    if os.fork() != 0:
        lifeline.close()  # the worker needs no copy; only the trainer's end decides EOF
        return
    code = 0
    try:  # the guard: a bare fork of the still single-threaded worker
        conn.close()  # never hold the worker's data pipe: the trainer must see EOF the moment the worker dies
        _die_with_parent()
        poller = select.poll()
        poller.register(lifeline.fileno(), select.POLLIN)
        while os.getppid() == worker:
            if poller.poll(1000):  # readable, yet the trainer never writes: EOF, the trainer is gone
                os.kill(worker, signal.SIGKILL)
                break
    except BaseException:
        code = 1
    finally:
        os._exit(code)  # never return into the worker's code


def _die_with_parent():
    """Linux: ask the kernel to SIGKILL this process when its parent exits (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the getppid check in the guard's loop still ends it within a second


def _cap_memory(limit):
    """RLIMIT_AS = the worker's address space now + `limit`. Relative, because a worker forked from a process
    that imported torch already maps about a GB of libraries it never touches (virtual, not resident)."""
    if not limit or resource is None or not os.path.exists("/proc/self/statm"):
        return  # macOS does not enforce RLIMIT_AS; there the timeout alone bounds a reward
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")  # VmSize in bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + limit if hard == resource.RLIM_INFINITY else min(size + limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


class Verifier:
    """Score completions with `task.reward` in a worker process, at most `timeout` seconds per completion.

        with Verifier(task, timeout=5.0) as v:
            rewards = v.score(completions, rows)                # list[float], one per completion
            rewards = v.score(completions, rows, budget_s=60)   # and at most 60 s for the whole call

    The worker reports after every completion; when no report comes within `timeout`, the worker is killed
    (SIGKILL: nothing in the child has to cooperate), that completion gets reward 0.0 and a fresh worker scores
    the rest. Rewards that raise (MemoryError past `memory_limit` included) also get 0.0. When `budget_s` runs
    out, the worker is killed and every completion not yet scored gets 0.0. `stats` counts all three, for the
    training log: "timeouts", "errors" (with "last_error"), "budget_skipped".

    Start method: "forkserver" (Python 3.14's default on Linux). A plain fork of a trainer that runs torch's
    thread pools and CUDA can inherit a lock held by another thread and deadlock; forkserver forks each worker
    from a small clean server process instead, which costs about as little as a fork when a worker is replaced.
    The task object is pickled to the worker, so it must be defined in an importable module (not __main__).
    """

    def __init__(self, task, timeout=5.0, start_timeout=120.0, memory_limit=MEMORY_LIMIT):
        self.task, self.timeout, self.start_timeout, self.memory_limit = task, timeout, start_timeout, memory_limit
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        self._proc = self._conn = self._lifeline = None
        self.stats = {"timeouts": 0, "errors": 0, "budget_skipped": 0, "last_error": None}

    def _start(self):
        self._conn, child = self._ctx.Pipe()
        lifeline_r, self._lifeline = self._ctx.Pipe(duplex=False)  # we hold the only writer, and never write
        self._proc = self._ctx.Process(target=_worker, args=(child, lifeline_r, self.task, self.memory_limit),
                                       daemon=True)
        self._proc.start()
        child.close()
        lifeline_r.close()
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
        self._lifeline.close()  # the guard, if still alive, reads EOF and exits
        self._proc = self._conn = self._lifeline = None

    def score(self, completions, rows, budget_s=None):
        """Rewards for `completions[i]` against `rows[i]`, each in [0, 1]; see the class docstring.
        `budget_s`: wall-clock seconds for the whole call (None or 0: no budget)."""
        if len(completions) != len(rows):
            raise ValueError(f"score: {len(completions)} completions but {len(rows)} rows")
        deadline = time.monotonic() + budget_s if budget_s else float("inf")
        n, out, i = len(completions), [0.0] * len(completions), 0
        if self._proc is not None and not self._proc.is_alive():  # died while idle (e.g. killed for memory)
            self._kill()
        while i < n:  # i: the first completion without a reward yet
            wait = min(self.timeout, deadline - time.monotonic())
            if wait <= 0:  # budget spent: the worker is busy with this batch, so it goes; the rest score 0
                if self._proc is not None:
                    self._kill()
                self.stats["budget_skipped"] += n - i
                break
            if self._proc is None:
                self._start()
                self._conn.send((i, list(completions[i:]), list(rows[i:])))
            elif i == 0:  # a live worker from an earlier batch
                self._conn.send((0, list(completions), list(rows)))
            try:
                ready = self._conn.poll(wait)  # also True at EOF, when the worker died
                if not ready and wait < self.timeout:
                    continue  # the budget ran out before the timeout: the check at the top scores the rest 0
                report = self._conn.recv() if ready else None
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
            self._lifeline.close()
            self._proc = self._conn = self._lifeline = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def score_batch(task, completions, rows, timeout=5.0):
    """One-off `Verifier(task, timeout).score(completions, rows)`; a trainer should keep one Verifier alive."""
    with Verifier(task, timeout=timeout) as v:
        return v.score(completions, rows)
