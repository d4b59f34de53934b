"""Where the package finds its files: an environment variable, else the repository, else the package.

Manifests, published values and weight files are each looked up the same way: a folder named by an
environment variable (a user's edited copy), then the places a checkout or an install keeps them.
One set of rules, so the three lookups cannot drift apart and their errors read alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from glocal_lib.errors import ConfigError, GlocalError


def env_dir(var: str, *, error: type[GlocalError] = ConfigError) -> Path | None:
    """The folder ``$var`` names, or None when it is unset or empty; a value that is not a folder is
    an error naming the variable (a typo there must not fall back silently to another copy)."""
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise error(f"{var}={value} is not a folder; unset it or point it at an existing folder.")
    return path


def first_dir(var: str, defaults: Sequence[Path], *, holding: str, what: str,
              error: type[GlocalError] = ConfigError) -> Path:
    """``$var`` when set, else the first of ``defaults`` holding a file matching ``holding`` (a glob)."""
    env = env_dir(var, error=error)
    if env is not None:
        return env
    for folder in defaults:
        if folder.is_dir() and any(folder.glob(holding)):
            return folder
    raise error(f"no {what} found in {' or '.join(str(f) for f in defaults)}; reinstall the package or set "
                f"{var} to a folder holding them.")


def find_file(name: str | os.PathLike[str], folders: Iterable[Path | str | None], *,
              as_path: bool = False) -> tuple[Path | None, list[Path]]:
    """The first ``folder / name`` that is a file, and every path looked at (for the error message).
    ``as_path``: ``name`` itself comes first, and an absolute ``name`` is only looked at as is."""
    path = Path(name).expanduser()
    searched: list[Path] = []
    if as_path:
        searched.append(path)
        if path.is_file():
            return path, searched
        if path.is_absolute():
            return None, searched
    for folder in folders:
        if folder:
            candidate = Path(folder).expanduser() / path
            searched.append(candidate)
            if candidate.is_file():
                return candidate, searched
    return None, searched
