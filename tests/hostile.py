"""A task whose rewards misbehave on request, for the verifier worker's tests. A module of its own, importing
no torch: the worker unpickles the task, so it imports this module, and a light one starts in a fraction of
a second."""
import os
import time
from pathlib import Path

from nanor1.tasks import Task


class Hostile(Task):
    """completion "spin": write the worker's pid to row["pidfile"], then loop for ever at 100% CPU (the issue's
    case); "sleep": sleep row["seconds"]; "alloc": allocate row["bytes"]; anything else: reward 1."""

    def reward(self, completion, row):
        if completion == "spin":
            Path(row["pidfile"]).write_text(str(os.getpid()))
            while True:
                pass
        if completion == "sleep":
            time.sleep(row["seconds"])
        if completion == "alloc":
            return float(len(bytearray(row["bytes"])) > 0)
        return 1.0
