"""Exclusive file locks that say who holds them, and OS write errors turned into clear messages.

flock locks are released by the OS when their holder dies (kill -9 is safe, a lock file naming a
dead PID is simply taken over), but a *stopped* holder (Ctrl-Z, SIGSTOP) keeps the lock: the waiter
then says which run is locked by which PID and that it is waiting, instead of hanging silently.

Across machines (Ray workers on several nodes sharing one results folder) the same locks hold on a
shared POSIX filesystem whose flock is cluster-wide (NFSv4, or Lustre mounted with `-o flock`). Two
cases there are not settled by the OS, and are by the lock file itself (``PID HOST`` of the holder,
its mtime refreshed every HEARTBEAT_S seconds by the holder):
- the holder's PID no longer exists on this host but the lock is still held (a leftover child
  process inherited it): the lock is stale and taken over at once;
- the holder is on another host and its heartbeat has not moved for `stale_after` seconds of the
  waiter's own clock (a crashed or partitioned node; no clock comparison between machines): the
  lock is stale and taken over.
Taking over unlinks the stale lock file and locks a new one; every acquirer checks that the file
it locked is still the one at the path, so at most one process holds the lock at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glocal_lib.errors import DiskFullError, RunError

POLL_S = 0.5
HEARTBEAT_S = 30.0  # the holder refreshes its lock file's mtime this often
LOCAL_GRACE_S = 2.0  # a dead PID in a held lock file: how long before it counts as stale
STALE_AFTER_S = float(os.environ.get("GLOCAL_LOCK_STALE_S", "600"))  # another host's lock without a heartbeat
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f}" if nbytes >= 2**20 else f"{nbytes / 2**20:.2f}"


def free_bytes(path: Path) -> int | None:
    """Free bytes on the device holding `path` (or its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def disk_full(path: Path, needs: int | None = None) -> DiskFullError:
    free = free_bytes(path)
    need = f"needs about {_mb(needs)} MB" if needs else "needs more space"
    have = f", {_mb(free)} MB free" if free is not None else ""
    return DiskFullError(f"no space left on device at {path} ({need}{have}): free some space there or point "
                         f"the results (--results) or the feature cache (--profile-set cache_dir=DIR) at a larger disk")


def require_space(path: Path, needs: int) -> None:
    """Raise DiskFullError before writing `needs` bytes under `path` if the device has less free."""
    free = free_bytes(path)
    if free is not None and free < needs:
        raise disk_full(path, needs)


def write_error(path: Path, exc: BaseException, needs: int | None = None) -> RunError | None:
    """The clear error for an OSError (or torch.save's RuntimeError) while writing under `path`, else None."""
    if isinstance(exc, OSError):
        where = Path(exc.filename) if exc.filename else path
        if exc.errno in _NO_SPACE:
            return disk_full(where.parent if where.suffix else where, needs)
        if exc.errno in _READ_ONLY:
            return RunError(f"cannot write to {where}: {exc.strerror} (a read-only or foreign folder?); pass "
                            f"--results DIR (and --profile-set cache_dir=DIR) pointing at a folder you can write")
        return None
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc) or "file write failed" in str(exc)):
        free = free_bytes(path)
        if free is None or needs is None or free < 2 * needs + 2**20:
            return disk_full(path, needs)
        return RunError(f"torch.save could not write under {path} ({str(exc).splitlines()[0][:200]}); "
                        f"{_mb(free)} MB are free there: check the folder and rerun (the run resumes)")
    return None


@contextlib.contextmanager
def clear_write_errors(path: Path, needs: int | None = None) -> Iterator[None]:
    """Re-raise disk-full / read-only errors from the block as RunError naming `path` (no traceback noise)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        err = write_error(path, exc, needs)
        if err is None:
            raise
        raise err from exc


def _process_state(pid: int) -> str:
    """'running', 'stopped', 'exited' or 'unknown' for a PID on this machine."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        code = stat.rsplit(")", 1)[1].split()[0]
        return {"T": "stopped", "t": "stopped", "Z": "exited", "X": "exited"}.get(code, "running")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "exited"
    except OSError:
        return "unknown"
    return "running"


def _holder(lock_file: Path) -> tuple[int | None, str | None]:
    """(PID, host) written by the lock's holder, or Nones when unreadable."""
    try:
        text = lock_file.read_text().split()
        return (int(text[0]) if text else None), (text[1] if len(text) > 1 else None)
    except (OSError, ValueError):
        return None, None


def _host() -> str:
    return os.uname().nodename


def holder_message(lock_file: Path, what: str) -> str:
    """Who holds the lock on `what`, and what the user can do about it."""
    pid, host = _holder(lock_file)
    if pid is None:
        return f"{what} is locked by another process ({lock_file}); waiting for it to finish"
    if host and host != _host():
        return f"{what} is locked by PID {pid} on {host} ({lock_file}); waiting for it to finish"
    state = _process_state(pid)
    if state == "stopped":
        return (f"{what} is locked by PID {pid}, which is stopped (Ctrl-Z / SIGSTOP): waiting; resume it "
                f"(`kill -CONT {pid}` or `fg` in its shell) or end it (`kill {pid}`)")
    if state == "exited":
        return (f"{what} is locked by a process started by PID {pid}, which has exited (a leftover worker "
                f"still holds {lock_file}): taking the lock over")
    return f"{what} is locked by PID {pid} (running); waiting for it to finish"


class _Staleness:
    """Decides, while waiting, whether the lock's holder is gone (see the module docstring)."""

    def __init__(self, lock_file: Path, stale_after: float) -> None:
        self.lock_file, self.stale_after = lock_file, stale_after
        self.seen: tuple[int, int, int | None] | None = None  # (inode, mtime_ns, exited PID) last seen
        self.since = time.monotonic()

    def stale_inode(self) -> int | None:
        """The inode of the lock file when its holder is gone, else None.

        Both verdicts need the same file state for a while (LOCAL_GRACE_S here, `stale_after` for another
        host): a process that has just taken the lock has not written its own PID yet."""
        try:
            st = os.stat(self.lock_file)
        except OSError:
            return None
        pid, host = _holder(self.lock_file)
        local = pid is not None and (host is None or host == _host())
        if local and _process_state(pid) != "exited":
            self.seen = None
            return None
        state = (st.st_ino, st.st_mtime_ns, pid if local else None)
        if state != self.seen:
            self.seen, self.since = state, time.monotonic()
            return None
        bound = LOCAL_GRACE_S if local else self.stale_after
        return st.st_ino if time.monotonic() - self.since > bound else None


def _take_over(lock_file: Path, inode: int, what: str, reason: str) -> None:
    """Unlink a stale lock file (only if it is still the one judged stale) so a new one can be locked."""
    with contextlib.suppress(OSError):
        if os.stat(lock_file).st_ino == inode:
            os.unlink(lock_file)
            print(f"glocal: {what}: {reason}; took the stale lock {lock_file} over", file=sys.stderr, flush=True)


def _heartbeat(lock_file: Path, fd: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(fd)


def _open_locked(lock_file: Path, what: str, timeout: float | None, stale_after: float) -> Any:
    """Open and flock `lock_file`, waiting (and telling the user) while another process holds it."""
    start = time.monotonic()
    told = False
    staleness = _Staleness(lock_file, stale_after)
    while True:
        with clear_write_errors(lock_file.parent):
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock_file, "a+")  # noqa: SIM115 - returned to the caller, which closes it
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            message = holder_message(lock_file, what)
            if not told:
                print(f"glocal: {message}", file=sys.stderr, flush=True)
                told = True
            inode = staleness.stale_inode()
            if inode is not None:
                _take_over(lock_file, inode, what, message.split(" (")[0])
                continue
            if timeout is not None and time.monotonic() - start > timeout:
                raise RunError(message.replace("waiting", "gave up waiting")) from None
            time.sleep(POLL_S)
            continue
        try:  # the file may have been taken over (unlinked) between our open and our flock
            if os.fstat(fh.fileno()).st_ino == os.stat(lock_file).st_ino:
                return fh
        except OSError:
            pass
        fh.close()


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout: float | None = None,
              stale_after: float | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` (created if needed); tell the user while waiting for it.

    timeout: seconds to wait before RunError (None: wait as long as the holder works).
    stale_after: seconds without a heartbeat after which another host's lock counts as abandoned
    (default STALE_AFTER_S, env GLOCAL_LOCK_STALE_S)."""
    lock_file = Path(lock_file)
    fh = _open_locked(lock_file, what, timeout, STALE_AFTER_S if stale_after is None else stale_after)
    stop = threading.Event()
    try:
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {_host()}\n")
            fh.flush()
        beat = threading.Thread(target=_heartbeat, args=(lock_file, fh.fileno(), stop), daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()
