"""The notebooks' parameters: names and types checked before anything runs.

Papermill injects ``-p NAME VALUE`` as plain assignments after the ``parameters`` cell, whatever the
name: a typo such as ``-p dataset visa`` would otherwise leave ``datasets = None`` and silently run
every dataset. The known names are the ones the ``parameters`` cell assigns (PARAMETERS below, the
single source: every notebook's ``parameters`` cell is this text, which a test checks), so a new
parameter needs no second list here, only its rule if it is not a plain optional string.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

from glocal_lib.engine.profiles import PRECISIONS
from glocal_lib.errors import ConfigError, GlocalError

PARAMETERS = '''# Parameters (papermill overrides these; `glocal reproduce` passes its options here)
profile = "smoke"                 # smoke (synthetic data, random tiny model, CPU) | paper (real data, ViT-L/14@336, GPU)
preset = "glocalclip-released"    # GlocalCLIP preset: glocalclip-released (train.sh) | glocalclip-paper (paper text)
datasets = None                   # e.g. ["visa"]: only these evaluation datasets; None: all
methods = None                    # e.g. ["GlocalCLIP", "AnomalyCLIP"]: method columns of T1/T2/TE/F3; None: all
only = None                       # artifact ids, e.g. ["T1", "F5"]; None: every artifact of this notebook
results_root = None               # None: the profile's (results/<profile>)
data_root = None                  # None: the profile's (smoke: generated stand-ins; paper: $GLOCAL_DATA_ROOT)
cache_dir = None                  # None: the profile's feature cache
device = None                     # None: the profile's (smoke: cpu, paper: cuda)
precision = None                  # None: the profile's; fp32 | bf16 | fp16
progress = False                  # engine progress bars'''


def name_list(value: Any) -> list[str] | None:
    """The one parser of name lists (artifact ids, datasets, methods), wherever they come from.

    None stays None (= all). A string is what papermill's ``-p`` or a user passes: a JSON list
    ('["T1", "F5"]') or names separated by commas and/or spaces ('T1', 'T1,F5', 'visa mvtec'); it
    is never iterated character by character. A list (argparse ``nargs``, Python callers) has each
    item split the same way. An empty selection stays empty (it selects nothing).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"cannot read the name list {value!r}: {exc.msg}; write it as 'T1,F5' or as a JSON list") from None
            if not isinstance(items, list):
                raise ConfigError(f"the name list {value!r} is not a list")
            return name_list([str(v) for v in items])
        return [part for part in re.split(r"[,\s]+", text) if part]
    items = list(value) if isinstance(value, Iterable) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"expected a list of names or a string, got {value!r}")
    return [part for item in items for part in re.split(r"[,\s]+", item.strip()) if part]


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str | os.PathLike)


def _name_list(v: Any) -> bool:
    return v is None or isinstance(v, str) or (isinstance(v, list | tuple) and all(isinstance(x, str) for x in v))


def _choices(options: Callable[[], tuple[str, ...]], optional: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (optional and v is None) or (isinstance(v, str) and v in options())

    return ok


def _profiles() -> tuple[str, ...]:
    from glocal_lib.engine.profiles import available_profiles

    return tuple(available_profiles())


def _presets() -> tuple[str, ...]:
    from glocal_lib.experiments.registry import GLOCAL_PRESETS

    return tuple(GLOCAL_PRESETS)


# name -> (check, what is accepted); names without a rule are optional strings (paths, device)
RULES: dict[str, tuple[Callable[[Any], bool], Callable[[], str]]] = {
    "profile": (_choices(_profiles), lambda: f"one of {', '.join(_profiles())}"),
    "preset": (_choices(_presets), lambda: f"one of {', '.join(_presets())}"),
    "datasets": (_name_list, lambda: 'None, a list of names (["visa", "mvtec"]) or a string ("visa,mvtec")'),
    "methods": (_name_list, lambda: 'None, a list of names (["GlocalCLIP"]) or a string ("GlocalCLIP,CoOp")'),
    "only": (_name_list, lambda: 'None, a list of artifact ids (["T1", "F5"]) or a string ("T1,F5")'),
    "precision": (_choices(lambda: PRECISIONS, optional=True), lambda: f"None or one of {', '.join(PRECISIONS)}"),
    "progress": (lambda v: isinstance(v, bool), lambda: "True or False"),
}


@cache
def parameter_defaults() -> dict[str, Any]:
    """Name -> default of every parameter, read from the notebooks' ``parameters`` cell (PARAMETERS)."""
    out: dict[str, Any] = {}
    for node in ast.parse(PARAMETERS).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def check_parameters(values: Mapping[str, Any], source: str = "notebook parameter") -> dict[str, Any]:
    """Refuse unknown names and values of the wrong type, naming the parameter and what it accepts."""
    known = parameter_defaults()
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown {source}{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                          f"the known ones are: {', '.join(known)}.")
    for name, value in values.items():
        check, accepted = RULES.get(name, (_optional_str, lambda: "None or a string"))
        if not check(value):
            raise ConfigError(f"{source} {name} = {value!r} ({type(value).__name__}) is not valid; expected "
                              f"{accepted()}. With papermill: -p {name} VALUE (-r for a raw string).")
    return dict(values)


@cache
def _cell_names() -> frozenset[str]:
    """Names the notebooks' own cells assign (``data``, ``ids``...): not parameters, even when a cell is rerun.

    Read from the notebook sources (a percent-format source is a Python file); none when they are absent.
    """
    from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, NOTEBOOKS_DIR

    names: set[str] = set()
    for nb in NOTEBOOK_ORDER:
        path = NOTEBOOKS_DIR / f"{nb}.py"
        if path.is_file():
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return frozenset(names - set(parameter_defaults()))


def _is_user_value(name: str, value: Any) -> bool:
    """Variables a notebook user or papermill set: plain data, not IPython's In/Out/_, imports or cell results."""
    if name.startswith("_") or name in {"In", "Out", "exit", "quit", "get_ipython"} or name in _cell_names():
        return False
    return value is None or isinstance(value, str | bool | int | float | list | tuple | dict | os.PathLike)


def _short_glocal_errors() -> None:
    """In a kernel, show a GlocalError as its message (the error still fails the cell and papermill).

    The message says what to fix; the traceback into the library only helps with GLOCAL_DEBUG=1.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or os.environ.get("GLOCAL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}:
        return

    def handler(sh: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
        stb = [f"{etype.__name__}: {value}", "(set GLOCAL_DEBUG=1 for the traceback)"]
        sh._showtraceback(etype, value, stb)  # an error output: the cell (and papermill) still fail
        return stb

    shell.set_custom_exc((GlocalError,), handler)


def check_notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """First call of every notebook: short error messages, then the parameters checked (see module doc)."""
    _short_glocal_errors()
    return check_parameters({k: v for k, v in namespace.items() if _is_user_value(k, v)})
