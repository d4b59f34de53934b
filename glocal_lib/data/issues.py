"""One record type for every dataset problem, so converters and checks report the same way.

A problem is never just printed: it carries a severity (``error`` stops, ``warning`` informs), the
file it concerns and a message that says how to fix it. ``raise_if_errors`` turns the errors of a
list into one :class:`~glocal_lib.errors.DataError`, so the user sees all of them at once instead
of fixing one file per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd

from glocal_lib.errors import DataError

ERROR = "error"
WARNING = "warning"
ISSUE_COLUMNS = ["severity", "kind", "file", "message"]


@dataclass(frozen=True)
class Issue:
    """One problem found in a dataset tree or index (``file`` is relative to the root when possible)."""

    severity: str
    kind: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}: {self.kind}] {self.file}: {self.message}"


def error(kind: str, file: str, message: str) -> Issue:
    return Issue(ERROR, kind, file, message)


def warning(kind: str, file: str, message: str) -> Issue:
    return Issue(WARNING, kind, file, message)


def issues_frame(issues: Iterable[Issue]) -> pd.DataFrame:
    """A table a notebook can display (errors first)."""
    df = pd.DataFrame([asdict(i) for i in issues], columns=ISSUE_COLUMNS)
    if len(df):
        df = df.sort_values("severity", key=lambda s: s.ne(ERROR), kind="stable").reset_index(drop=True)
    return df


def format_issues(issues: list[Issue], limit: int = 20) -> str:
    lines = [f"  - {i}" for i in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... and {len(issues) - limit} more (see validate_dataset(...).table())")
    return "\n".join(lines)


def raise_if_errors(issues: list[Issue], what: str) -> None:
    """Raise one DataError listing every error-severity issue (warnings are ignored here)."""
    errors = [i for i in issues if i.severity == ERROR]
    if errors:
        raise DataError(
            f"{len(errors)} error(s) in {what}:\n{format_issues(errors)}\n"
            "Fix the files named above (or run `glocal data check` for the full report)."
        )
