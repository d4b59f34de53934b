"""Type and range checks of dataclass fields against their annotations, with messages for users.

Specs and configs come from YAML, the command line (``--override gcl_lambda=abc``) and notebooks'
papermill strings, so a wrong type is an input error, not a programming error: it must be refused
up front with the accepted type, never recorded as ``"gcl_lambda": "abc"`` in a run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from pathlib import PurePath
from typing import Any

from glocal_lib.errors import ConfigError

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp in _NAMES:
        return _NAMES[tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(tp)))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, _describe(tp))


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this checker does not model: accept


def check_types(obj: Any, what: str | None = None) -> None:
    """Raise ConfigError for the first field of dataclass `obj` whose value does not fit its annotation.

    Floats must be finite (a NaN learning rate or lambda never trains anything)."""
    cls = type(obj)
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints.get(f.name, Any)
        prefix = f"{what}: " if what else ""
        if not _matches(value, tp):
            raise ConfigError(f"{prefix}{f.name} must be {_describe(tp)}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value!r}")


def coerce_numbers(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Ints given for float fields become floats (YAML `1` and `1.0` are the same setting and hash)."""
    hints = _hints(cls)
    out = dict(values)
    for k, v in values.items():
        tp = hints.get(k)
        accepts_float = tp is float or float in typing.get_args(tp)
        if accepts_float and isinstance(v, int) and not isinstance(v, bool) and not _matches(v, _without_float(tp)):
            out[k] = float(v)
    return out


def _without_float(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not float]
    return typing.Union[tuple(args)] if args else type(None)  # noqa: UP007 - built at run time


def check_range(name: str, value: float | None, *, minimum: float | None = None, above: float | None = None,
                below: float | None = None, hint: str = "") -> None:
    """value >= minimum / value > above / value < below, or a ConfigError naming the accepted range."""
    if value is None:
        return
    bad = ((minimum is not None and value < minimum) or (above is not None and value <= above)
           or (below is not None and value >= below))
    if bad:
        parts = ([f">= {minimum:g}"] if minimum is not None else []) + ([f"> {above:g}"] if above is not None else []) \
            + ([f"< {below:g}"] if below is not None else [])
        raise ConfigError(f"{name} must be {' and '.join(parts)}, got {value!r}" + (f" ({hint})" if hint else ""))
