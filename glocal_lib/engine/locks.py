"""Exclusive file locks that say who holds them, and OS write errors turned into clear messages.

flock locks are released by the OS when their holder dies (kill -9 is safe, a lock file naming a
dead PID is simply taken over), but a *stopped* holder (Ctrl-Z, SIGSTOP) or one on another machine
keeps the lock: the waiter then says which run is locked by which PID and that it is waiting,
instead of hanging silently.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from glocal_lib.errors import DiskFullError, RunError

POLL_S = 0.5
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


def holder_message(lock_file: Path, what: str) -> str:
    """Who holds the lock on `what`, and what the user can do about it."""
    try:
        text = lock_file.read_text().split()
        pid = int(text[0]) if text else None
        host = text[1] if len(text) > 1 else None
    except (OSError, ValueError):
        pid, host = None, None
    if pid is None:
        return f"{what} is locked by another process ({lock_file}); waiting for it to finish"
    here = os.uname().nodename
    if host and host != here:
        return f"{what} is locked by PID {pid} on {host} ({lock_file}); waiting for it to finish"
    state = _process_state(pid)
    if state == "stopped":
        return (f"{what} is locked by PID {pid}, which is stopped (Ctrl-Z / SIGSTOP): waiting; resume it "
                f"(`kill -CONT {pid}` or `fg` in its shell) or end it (`kill {pid}`)")
    if state == "exited":
        return (f"{what} is locked by a process started by PID {pid}, which has exited (a leftover worker "
                f"still holds {lock_file}): waiting; end it (`fuser -k {lock_file}`)")
    return f"{what} is locked by PID {pid} (running); waiting for it to finish"


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` (created if needed); tell the user while waiting for it.

    timeout: seconds to wait before RunError (None: wait as long as the holder works)."""
    lock_file = Path(lock_file)
    with clear_write_errors(lock_file.parent):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_file, "a+")  # noqa: SIM115 - closed below, after the lock is released
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    print(f"glocal: {holder_message(lock_file, what)}", file=sys.stderr, flush=True)
                    told = True
                if timeout is not None and time.monotonic() - start > timeout:
                    raise RunError(holder_message(lock_file, what).replace("waiting", "gave up waiting")) from None
                time.sleep(POLL_S)
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {os.uname().nodename}\n")
            fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()
