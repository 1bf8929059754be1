"""Worker pools never outlive a killed command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from gandata.parallel import process_pool

    def pid_then_sleep(_):
        time.sleep(0.2)
        return os.getpid()

    if __name__ == "__main__":
        pool = process_pool(2)
        pids = set(pool.map(pid_then_sleep, range(8)))
        for _ in range(4):
            pool.submit(time.sleep, 600)  # keep the workers busy forever
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_command_is_killed(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids and all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], "pool workers outlived the killed command"
