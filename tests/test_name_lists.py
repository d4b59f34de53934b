"""One parser for name lists: CLI flags, papermill `-p` strings and Python lists all mean the same."""

from __future__ import annotations

import pytest

from glocal_lib.errors import ConfigError
from glocal_lib.experiments.parameters import name_list
from glocal_lib.experiments.pipeline import as_name_list
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.reproduce import _split


@pytest.mark.parametrize(("given", "expected"), [
    ("T1", ["T1"]),                       # papermill `-p only T1`: a string, not the characters T, 1
    ("T1,F5", ["T1", "F5"]),
    (" T1, F5  F6 ", ["T1", "F5", "F6"]),
    ('["T1", "F5"]', ["T1", "F5"]),       # papermill's rendering of a list
    (["T1,F5", "F6"], ["T1", "F5", "F6"]),  # argparse nargs="*" with a comma inside one value
    (("visa",), ["visa"]),
    ([], []),
    (None, None),
])
def test_every_spelling_gives_the_same_list(given, expected) -> None:
    assert name_list(given) == expected
    assert as_name_list(given) == expected


def test_cli_flag_without_values_selects_everything() -> None:
    assert _split([]) is None and _split(None) is None and _split(["T1,T2"]) == ["T1", "T2"]


def test_registry_ids_from_a_papermill_string() -> None:
    reg = load_registry(profile="smoke")
    assert reg.expand_ids("T1") == ["T1"]
    assert reg.expand_ids("F12-F14") == reg.expand_ids(["F12", "F13", "F14"]) == ["F12", "F13", "F14"]
    with pytest.raises(ConfigError, match="'T'"):
        reg.expand_ids(list("T1"))  # what iterating over the string used to ask for


def test_bad_lists_say_what_to_write() -> None:
    with pytest.raises(ConfigError, match="name list"):
        name_list('["T1", ')
    with pytest.raises(ConfigError, match="list of names"):
        name_list([1, 2])
