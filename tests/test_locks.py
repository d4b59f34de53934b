"""Run / cache locks across processes and machines: a holder gone on this host (its lock inherited by
a leftover child) or a holder on another host whose heartbeat stopped does not block a waiter forever;
a live holder's heartbeat keeps its lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from glocal_lib.engine import locks
from glocal_lib.errors import RunError

REPO = str(Path(__file__).resolve().parents[1])


def _holder(lock: Path, body: str) -> subprocess.Popen[str]:
    """A process running `body` (which prints a line when set up) with glocal_lib.engine.locks imported
    alone (the package's __init__ imports torch: seconds per process)."""
    code = textwrap.dedent(f"""
        import os, sys, time, types
        sys.path.insert(0, {REPO!r})
        engine = types.ModuleType("glocal_lib.engine")
        engine.__path__ = [os.path.join({REPO!r}, "glocal_lib", "engine")]
        sys.modules["glocal_lib.engine"] = engine
        from glocal_lib.engine import locks
        """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_lock_left_to_a_child_of_a_dead_holder_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "run.lock"
    parent = _holder(lock, f"""
        with locks.exclusive({str(lock)!r}, "x"):
            child = os.fork()
            if child == 0:  # inherits the locked file description, like a leftover worker process
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
            os._exit(0)  # the PID written in the lock file is gone, the lock is still held
        """)
    child = int(parent.stdout.readline())
    parent.wait()
    try:
        t = time.monotonic()
        with locks.exclusive(lock, "run R", timeout=30):
            waited = time.monotonic() - t
            assert lock.read_text().split()[0] == str(os.getpid())
        assert locks.LOCAL_GRACE_S <= waited < locks.LOCAL_GRACE_S + 10
        err = capsys.readouterr().err
        assert f"PID {parent.pid}, which has exited" in err and "took the stale lock" in err
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("heartbeat", [False, True])
def test_another_hosts_lock_is_stale_only_without_a_heartbeat(tmp_path: Path, heartbeat: bool) -> None:
    lock = tmp_path / "run.lock"
    beat = "os.utime(fh.fileno())" if heartbeat else "pass"
    holder = _holder(lock, f"""
        import fcntl
        fh = open({str(lock)!r}, "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write("4242 some-other-host\\n"); fh.flush()
        print("locked", flush=True)
        for _ in range(600):
            time.sleep(0.1)
            {beat}
        """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        if heartbeat:
            with pytest.raises(RunError, match="locked by PID 4242 on some-other-host.*gave up waiting"), \
                    locks.exclusive(lock, "run R", timeout=3, stale_after=1.0):
                pass
        else:
            t = time.monotonic()
            with locks.exclusive(lock, "run R", timeout=20, stale_after=1.0):
                assert 1.0 <= time.monotonic() - t < 10
                assert lock.read_text().split() == [str(os.getpid()), os.uname().nodename]
    finally:
        holder.kill()
        holder.wait()


def test_the_holder_refreshes_its_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.1)
    lock = tmp_path / "run.lock"
    with locks.exclusive(lock, "run R"):
        first = lock.stat().st_mtime_ns
        time.sleep(0.5)
        assert lock.stat().st_mtime_ns > first
