"""Kernels for `glocal reproduce`: a private kernelspec per reproduction, and one kernel shared by its notebooks.

Starting a kernel and importing torch, open_clip, pandas and matplotlib costs ~9 s on 2 cores;
seven notebooks paid it seven times. A shared kernel pays it once: before each notebook its
namespace is reset (variables, history, execution count), so every notebook still starts from
nothing but its own parameters, and each stays runnable alone by papermill. What survives a reset
is what a fresh kernel would rebuild identically: imported modules and the process-wide memos
(frozen backbones, zero-shot prompt embeddings, the git commit).

The kernelspec lives in a temporary folder of this reproduction (removed afterwards): two
reproductions running at once can never overwrite each other's interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glocal_lib.io import atomic_write_json

KERNEL_NAME = "glocal-repro"
RESET_CODE = "get_ipython().reset(new_session=True, aggressive=False)"


def kernelspec(package_parent: Path) -> dict[str, Any]:
    """The kernel.json for this interpreter, with the package importable and a headless backend."""
    pythonpath = os.pathsep.join(p for p in (str(package_parent), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"glocal ({Path(sys.executable).parent.parent.name})",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath, "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        "metadata": {"debugger": False},
    }


@contextlib.contextmanager
def private_kernelspec(package_parent: Path) -> Iterator[Path]:
    """Register KERNEL_NAME in a fresh temporary JUPYTER_PATH entry for the duration of the block."""
    root = Path(tempfile.mkdtemp(prefix="glocal-kernels-"))
    atomic_write_json(root / "kernels" / KERNEL_NAME / "kernel.json", kernelspec(package_parent))
    old_path = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(root), old_path) if p)
    try:
        yield root
    finally:
        if old_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old_path
        shutil.rmtree(root, ignore_errors=True)


class SharedKernel:
    """One running KERNEL_NAME kernel, handed to papermill (`km=`) for several notebooks."""

    def __init__(self, cwd: str | os.PathLike[str], startup_timeout: int = 120) -> None:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self.startup_timeout = startup_timeout
        self.km = AsyncKernelManager(kernel_name=KERNEL_NAME)
        run_sync(self.km.start_kernel)(cwd=str(cwd))
        self.notebooks = 0

    def prepare(self) -> None:
        """Before a notebook: a clean namespace (the first notebook gets the fresh kernel as is)."""
        if self.notebooks:
            from jupyter_core.utils import run_sync

            run_sync(self._reset)()
        self.notebooks += 1

    async def _reset(self) -> None:
        kc = self.km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=self.startup_timeout)
            reply = await kc.execute_interactive(RESET_CODE, store_history=False, timeout=self.startup_timeout,
                                                 output_hook=lambda msg: None)
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"resetting the shared kernel failed: {reply['content'].get('evalue')}")
        finally:
            kc.stop_channels()

    def close(self) -> None:
        from jupyter_core.utils import run_sync

        with contextlib.suppress(Exception):  # a kernel that already died has nothing to shut down
            run_sync(self.km.shutdown_kernel)(now=False)


@contextlib.contextmanager
def notebook_kernels(shared: bool, cwd: str | os.PathLike[str]) -> Iterator[SharedKernel | None]:
    """A SharedKernel for the block (or None: papermill starts one kernel per notebook)."""
    if not shared:
        yield None
        return
    kernel = SharedKernel(cwd)
    try:
        yield kernel
    finally:
        kernel.close()
