"""The notebooks, as data: `python -m glocal_lib.experiments.notebooks [folder]` (re)writes notebooks/*.ipynb.

They are thin on purpose: a `parameters` cell (papermill), library calls, displays. Generating them
from here keeps the seven files consistent and their outputs stripped; a test checks that the
committed files equal what this module writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from glocal_lib.io import atomic_write_text

# dependency order (experiments.md): data -> train -> evaluate -> ablations -> UMAP -> maps/scores -> tables+index
NOTEBOOK_ORDER = ("00_data", "01_train", "02_evaluate", "03_ablations", "04_prompt_umap", "05_maps_scores",
                  "06_tables_report")

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

OPEN = '''from IPython.display import Markdown, display

from glocal_lib.experiments import open_reproduction
from glocal_lib.experiments.parameters import check_notebook_parameters

check_notebook_parameters(globals())  # refuses unknown names (a typo such as `dataset`) and wrong types

repro = open_reproduction(profile=profile, preset=preset, datasets=datasets, methods=methods,
                          results_root=results_root, data_root=data_root, cache_dir=cache_dir,
                          device=device, precision=precision, progress=progress)
if repro.banner:
    display(Markdown(f"**{repro.banner.upper()}**"))
repro'''

SHOW_TABLES = '''for aid, table in tables.items():
    display(repro.show_table(table))'''
SHOW_FIGURES = '''for aid in figures:
    display(Markdown(f"### {aid}"))
    display(repro.show_figure(aid))'''

NOTEBOOKS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "00_data": ("Data preparation: stand-ins (smoke) or validated dataset folders (paper), indexes, T5", [
        ("code", '''data = repro.prepare_data(only)
{k: (len(v.index), v.eval_level) for k, v in data.items()}'''),
        ("code", '''ids = repro.artifact_ids("00_data", only)
tables = repro.build_tables(ids, data=data)'''),
        ("code", SHOW_TABLES),
    ]),
    "01_train": ("Train every prompt run the artifacts need (comparisons, ablations, UMAP, figures)", [
        ("markdown", "Notebooks 03-06 only draw. Finished runs are reused, unfinished ones resume."),
        ("code", '''ids = repro.artifact_ids(only=only)
plan = repro.plan(ids)
print(plan.summary())
train_dirs = repro.train(ids)
print(f"{len(train_dirs)} train runs ready in {repro.timings.get('train', 0):.1f} s")'''),
        ("code", "repro.status(ids).query('kind == \"train\"')"),
    ]),
    "02_evaluate": ("Evaluate the trained (and zero-shot) models: one dataset (`datasets=[...]`) or all", [
        ("code", '''ids = repro.artifact_ids(only=only)
eval_dirs = repro.evaluate(ids)
print(f"{len(eval_dirs)} eval runs ready in {repro.timings.get('evaluate', 0):.1f} s")'''),
        ("code", "repro.status(ids).query('kind == \"eval\"')"),
    ]),
    "03_ablations": ("Ablations: T3, T4, T6-T10, TA, TX (paper text vs released code) and F5", [
        ("code", '''ids = repro.artifact_ids("03_ablations", only)
repro.require_runs(ids)  # made by 01_train / 02_evaluate: this notebook only draws
tables = repro.build_tables(ids)
figures = repro.build_figures(ids)'''),
        ("code", SHOW_TABLES),
        ("code", SHOW_FIGURES),
    ]),
    "04_prompt_umap": ("UMAP of the four prompt embeddings across epochs (F6-F8)", [
        ("code", '''ids = repro.artifact_ids("04_prompt_umap", only)
repro.require_runs(ids)
figures = repro.build_figures(ids)'''),
        ("code", SHOW_FIGURES),
    ]),
    "05_maps_scores": ("Localization galleries (F3, F4, F12-F36) and score distributions (F9-F11)", [
        ("code", '''ids = repro.artifact_ids("05_maps_scores", only)
repro.require_runs(ids)
figures = repro.build_figures(ids)'''),
        ("code", SHOW_FIGURES),
    ]),
    "06_tables_report": ("Main tables (T1, T2, TE) and the browsable results index", [
        ("code", '''ids = repro.artifact_ids("06_tables_report", only)
repro.require_runs(ids)
tables = repro.build_tables(ids)'''),
        ("code", SHOW_TABLES),
        ("markdown", "## RC: check your setup — the released AnomalyCLIP checkpoints vs its logs\n\n"
                     "Paper profile: the two released checkpoints (`$GLOCAL_ANOMALYCLIP_CHECKPOINTS`, default "
                     "`weights/AnomalyCLIP/checkpoints`) evaluated as AnomalyCLIP's `test.sh` does, per category "
                     "beside the repository's logs, with a verdict (same as `glocal verify`). Smoke profile: "
                     "stand-in checkpoints exported from the AnomalyCLIP smoke training runs."),
        ("code", '''from glocal_lib.experiments.verify import reproduce_rc

rc = reproduce_rc(repro, ids, required=only is not None)
if rc is not None:
    display(repro.show_table(rc))
    print(rc.notes[0])'''),
        ("code", '''index = repro.build_index()
print(f"results index: {index}")'''),
    ]),
}


def make_notebook(name: str) -> nbformat.NotebookNode:
    title, cells = NOTEBOOKS[name]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = [nbformat.v4.new_markdown_cell(
        f"# {name}: {title}\n\nPart of `glocal reproduce` (notebooks run in order 00 → 06). Run it on its own "
        "with papermill (`papermill notebooks/{name}.ipynb out.ipynb -p profile smoke -p datasets '[\"visa\"]'`) "
        "or interactively: edit the parameters cell.".replace("{name}", name))]
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    out += [params, nbformat.v4.new_code_cell(OPEN)]
    for kind, src in cells:
        out.append(nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src))
    for i, cell in enumerate(out):  # stable ids: regenerating gives identical files
        cell["id"] = f"{name.replace('_', '-')}-{i:02d}"
    nb.cells = out
    return nb


def write_notebooks(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [atomic_write_text(folder / f"{name}.ipynb", nbformat.writes(make_notebook(name)) + "\n")
            for name in NOTEBOOK_ORDER]


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "notebooks"
    for path in write_notebooks(target):
        print(path)
