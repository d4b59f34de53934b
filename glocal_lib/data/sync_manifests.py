"""``python -m glocal_lib.data.sync_manifests``: refresh the packaged manifest copy after editing.

The canonical manifests are the repository's ``data_manifests/*.yaml``; the wheel ships the copy in
``glocal_lib/data/manifests/`` (see ``registry``). A test fails while the two differ.
"""

from __future__ import annotations

from glocal_lib.data.registry import sync_packaged_copy


def main() -> int:
    for path in sync_packaged_copy():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
