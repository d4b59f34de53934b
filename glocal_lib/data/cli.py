"""``glocal data index|check <dataset> --root PATH``: index a native layout or check it.

Wired into ``glocal_lib.cli`` as the ``data`` subcommand; returns an exit code, raises GlocalError
for user errors (the top-level CLI prints them without a traceback).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

from glocal_lib.data.index import build_index, default_index_path, read_index, write_index
from glocal_lib.data.registry import DATASET_KEYS, load_manifest
from glocal_lib.data.validate import read_expected, validate_dataset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glocal data", description="Index or check a dataset in its native layout.")
    sub = p.add_subparsers(dest="action", required=True)
    names = ", ".join(DATASET_KEYS)
    ix = sub.add_parser("index", help="write the unified index (CSV) of a dataset's test split")
    ix.add_argument("dataset", help=f"dataset key ({names}) or the released code's key")
    ix.add_argument("--root", required=True, help="dataset folder in its native layout")
    ix.add_argument("--out", help="index CSV to write (default: outside the data tree, see docs)")
    ix.add_argument("--lenient", action="store_true", help="write the index even if errors were found")
    ck = sub.add_parser("check", help="validate a dataset: counts, masks, readable files, sizes")
    ck.add_argument("dataset", help=f"dataset key ({names}) or the released code's key")
    ck.add_argument("--root", required=True, help="dataset folder in its native layout")
    ck.add_argument("--index", help="check this index CSV instead of listing the tree")
    ck.add_argument("--deep", action="store_true", help="decode every image and mask (slow; finds truncated files)")
    ck.add_argument("--expected", help="CSV (category,test_normal,test_anomalous) replacing the manifest counts")
    ck.add_argument("--skip-counts", action="store_true", help="do not compare counts with the manifest")
    ck.add_argument("--report", help="also write the problem table to this CSV")
    return p


def data_cli(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    m = load_manifest(args.dataset)
    root = Path(args.root)
    if args.action == "index":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = build_index(m.key, root, strict=not args.lenient)
        for w in caught:
            print(f"warning: {w.message}")
        out = Path(args.out) if args.out else default_index_path(m.key, root)
        write_index(df, out, root=root)
        counts = df.groupby("category", sort=False)["label"].agg(normal=lambda s: int((s == 0).sum()),
                                                                 anomalous=lambda s: int((s == 1).sum()))
        print(counts.to_string())
        print(f"wrote {len(df)} rows to {out}")
        return 0
    expected = read_expected(args.expected) if args.expected else None
    index = read_index(args.index) if args.index else None
    report = validate_dataset(m.key, root, index=index, expected=expected, deep=args.deep,
                              check_counts=not args.skip_counts, raise_on_error=False)
    print(report.text())
    if args.report:
        report.table().to_csv(args.report, index=False)
        print(f"wrote the problem table to {args.report}")
    return 1 if report.errors else 0
