"""Small, safe file helpers: atomic writes, checksums and safe YAML.

Outputs are written to a temporary file in the same folder and renamed into place, so a run killed
at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PathLike = str | os.PathLike[str]
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_save_with(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_save_with(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_torch(path: PathLike, obj: Any) -> Path:
    import torch

    return atomic_save_with(path, lambda p: torch.save(obj, p))


_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}(\.[^.]+)?")  # what mkstemp below names: .<stem>.<8 random><suffix>


def remove_temporaries(folder: PathLike) -> list[Path]:
    """Delete the temporary files that atomic writes killed mid-write (kill -9, a lost node) left under
    `folder`. Only while no other process writes there (e.g. with the run's lock held)."""
    gone = [p for p in Path(folder).rglob(".*") if p.is_file() and _TEMP_NAME.fullmatch(p.name)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def atomic_save_with(path: PathLike, save: Callable[[Path], None]) -> Path:
    """Atomically write with any saver taking a path (np.savez, DataFrame.to_csv, fig.savefig...).

    The temporary file keeps the target's suffix so savers that infer the format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        save(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: PathLike, chunk: int = 1 << 20) -> str:
    """What `git hash-object FILE` prints: sha1 of b"blob <size>\\0" + the bytes (no git needed).

    Identifies a file committed to a public repository by the id its tree lists (e.g. the released
    AnomalyCLIP checkpoints, which GitHub serves without a published checksum).
    """
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_yaml(path: PathLike) -> Any:
    """Load YAML with the safe loader only (files from users are untrusted).

    A tag such as ``!!python/object`` (which the safe loader refuses to construct) or a syntax error
    becomes a ConfigError naming the file and line, not a yaml traceback.
    """
    from glocal_lib.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        unsafe = isinstance(err, yaml.constructor.ConstructorError)
        what = "unsafe YAML (a tag the safe loader does not construct)" if unsafe else "invalid YAML"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        fix = ("use plain YAML values only (python/object tags are never executed)" if unsafe
               else "fix the syntax there")
        raise ConfigError(f"{what} at {path}{line}: {problem}; {fix}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a UTF-8 text (YAML) file ({err.reason} at byte {err.start}).") from None


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object, independent of key order: used for run ids and cache keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
