"""The process helper of the end-to-end tests: a daemon never outlives the test process that
started it (a timed-out test used to leave `daily-papers run` behind, busy for good)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PARENT = """
import subprocess, sys
from tests.fakes.daemon import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=die_with_parent)
print(child.pid, flush=True)
sys.stdin.readline()
"""


def test_a_started_process_dies_with_the_process_that_started_it() -> None:
    with subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as parent:
        assert parent.stdin and parent.stdout
        child = os.pidfd_open(int(parent.stdout.readline()))
        try:
            assert select.select([child], [], [], 0)[0] == []  # alive while its parent lives
            parent.stdin.close()  # the parent ends without cleaning up, as a killed test does
            assert parent.wait(timeout=30) == 0
            assert select.select([child], [], [], 30)[0] == [child], "the child outlived it"
        finally:
            os.close(child)
