"""The notebooks' sources and their build: `notebooks/NN_name.py` (jupytext percent format) -> .ipynb.

The sources are plain text under version control; JupyterLab with jupytext opens them as notebooks.
`glocal reproduce` builds the .ipynb papermill executes from them (jupytext; well under a second), so
there is no committed .ipynb to fall out of step. By hand: `jupytext --to ipynb notebooks/02_evaluate.py`.

Each artifact a notebook draws (its `notebook:` in experiments.yaml) has a section headed
`## <id> — <title>`; `sections` reads them (tests check them against experiments.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import nbformat

from glocal_lib.errors import ConfigError

# dependency order (experiments.md): data -> train -> evaluate -> ablations -> UMAP -> maps/scores -> tables+index
NOTEBOOK_ORDER = ("00_data", "01_train", "02_evaluate", "03_ablations", "04_prompt_umap", "05_maps_scores",
                  "06_tables_report")
NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
SOURCE_FORMAT = "py:percent"
# an artifact's section: "## T1 — <title>" (an em dash between id and title; other headings are free)
SECTION = re.compile(r"^## (\S+) — (.+?)\s*$", re.M)


def source_path(name: str, folder: str | Path | None = None) -> Path:
    """`<folder>/<name>.py` (default: the checkout's notebooks/), or an error naming what is missing."""
    path = Path(folder or NOTEBOOKS_DIR) / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"notebook source {path} not found: the notebooks live in the repository's notebooks/ "
                          "folder (run from a checkout, e.g. after `pip install -e .`)")
    return path


def read_source(path: str | Path) -> nbformat.NotebookNode:
    """A percent-format source as a notebook (cell metadata such as the `parameters` tag included)."""
    import jupytext

    return jupytext.read(Path(path), fmt=SOURCE_FORMAT)


def to_ipynb(source: str | Path, out: str | Path) -> Path:
    """Build the .ipynb of one source (stable cell ids: rebuilding gives the same file)."""
    nb = read_source(source)
    stem = Path(source).stem.replace("_", "-")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{i:02d}"
    nb.metadata.pop("jupytext", None)  # the .ipynb is a build product, not paired with the source
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def build_notebooks(names: Sequence[str], out_dir: str | Path, source_dir: str | Path | None = None) -> dict[str, Path]:
    """name -> the .ipynb built under out_dir; a source folder holding `<name>.ipynb` (and no .py) is used as is."""
    out = {}
    for name in names:
        given = Path(source_dir) / f"{name}.ipynb" if source_dir is not None else None
        if given is not None and given.is_file() and not (Path(source_dir) / f"{name}.py").is_file():
            out[name] = given
        else:
            out[name] = to_ipynb(source_path(name, source_dir), Path(out_dir) / f"{name}.ipynb")
    return out


def record_source(executed: str | Path, source: str | Path) -> None:
    """Point papermill's `input_path` in an executed notebook at its source (not the temporary .ipynb)."""
    from glocal_lib.io import atomic_write_text

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.setdefault("papermill", {})["input_path"] = str(source)
    atomic_write_text(Path(executed), nbformat.writes(nb))


def sections(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(artifact id, title) of every `## <id> — <title>` heading, in notebook order."""
    return [(m.group(1), m.group(2)) for cell in nb.cells if cell.cell_type == "markdown"
            for m in SECTION.finditer(cell.source)]
