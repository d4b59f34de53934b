# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     formats: py:percent
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05_maps_scores — Localization galleries (F3, F4, F12-F36) and score distributions (F9-F11)
#
# Part of `glocal reproduce` (the notebooks run in order 00 → 06). Open this file in JupyterLab (with jupytext)
# and edit the parameters cell, or run it alone with papermill: `jupytext --to ipynb
# notebooks/05_maps_scores.py`, then `papermill notebooks/05_maps_scores.ipynb out.ipynb -p profile smoke -p
# datasets '["visa"]'`.
#
# Each section `## <id> — <title>` draws the artifact defined under `artifacts: <id>` in
# `glocal_lib/experiments/experiments.yaml` (its `kind` names the code that draws it) and shows it.

# %% tags=["parameters"]
# Parameters (papermill overrides these; `glocal reproduce` passes its options here)
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
progress = False                  # engine progress bars

# %%
from glocal_lib.experiments import open_notebook

repro = open_notebook(globals())  # checks the parameters (a typo such as `dataset` is refused), shows the banner
repro

# %%
ids = repro.artifact_ids("05_maps_scores", only)
repro.require_runs(ids)  # made by 01_train / 02_evaluate: this notebook only draws

# %% [markdown]
# ## F3 — Anomaly maps of every method (input, ground truth, one column per method)

# %%
repro.show("F3", ids)

# %% [markdown]
# ## F4 — Localization with vs without the glocal contrastive loss

# %%
repro.show("F4", ids)

# %% [markdown]
# ## F9 — Image anomaly scores, normal vs anomalous, MVTec AD (per category)

# %%
repro.show("F9", ids)

# %% [markdown]
# ## F10 — Image anomaly scores, normal vs anomalous, VisA (per category)

# %%
repro.show("F10", ids)

# %% [markdown]
# ## F11 — Image anomaly scores, normal vs anomalous, medical image-level datasets

# %%
repro.show("F11", ids)

# %% [markdown]
# ## F12 — Per-category anomaly maps, MVTec AD: bottle, cable

# %%
repro.show("F12", ids)

# %% [markdown]
# ## F13 — Per-category anomaly maps, MVTec AD: capsule, carpet

# %%
repro.show("F13", ids)

# %% [markdown]
# ## F14 — Per-category anomaly maps, MVTec AD: grid, hazelnut

# %%
repro.show("F14", ids)

# %% [markdown]
# ## F15 — Per-category anomaly maps, MVTec AD: leather, metal_nut

# %%
repro.show("F15", ids)

# %% [markdown]
# ## F16 — Per-category anomaly maps, MVTec AD: pill, screw

# %%
repro.show("F16", ids)

# %% [markdown]
# ## F17 — Per-category anomaly maps, MVTec AD: tile, toothbrush

# %%
repro.show("F17", ids)

# %% [markdown]
# ## F18 — Per-category anomaly maps, MVTec AD: transistor, wood

# %%
repro.show("F18", ids)

# %% [markdown]
# ## F19 — Per-category anomaly maps, MVTec AD: zipper

# %%
repro.show("F19", ids)

# %% [markdown]
# ## F20 — Per-category anomaly maps, MPDD: bracket_black, bracket_brown

# %%
repro.show("F20", ids)

# %% [markdown]
# ## F21 — Per-category anomaly maps, MPDD: bracket_white, connector

# %%
repro.show("F21", ids)

# %% [markdown]
# ## F22 — Per-category anomaly maps, MPDD: metal_plate, tubes

# %%
repro.show("F22", ids)

# %% [markdown]
# ## F23 — Per-category anomaly maps, DTD-Synthetic: Woven_001, Woven_127

# %%
repro.show("F23", ids)

# %% [markdown]
# ## F24 — Per-category anomaly maps, DTD-Synthetic: Woven_104, Stratified_154

# %%
repro.show("F24", ids)

# %% [markdown]
# ## F25 — Per-category anomaly maps, DTD-Synthetic: Blotchy_099, Woven_068

# %%
repro.show("F25", ids)

# %% [markdown]
# ## F26 — Per-category anomaly maps, DTD-Synthetic: Woven_125, Marbled_078

# %%
repro.show("F26", ids)

# %% [markdown]
# ## F27 — Per-category anomaly maps, DTD-Synthetic: Perforated_037, Mesh_114

# %%
repro.show("F27", ids)

# %% [markdown]
# ## F28 — Per-category anomaly maps, DTD-Synthetic: Fibrous_183, Matted_069

# %%
repro.show("F28", ids)

# %% [markdown]
# ## F29 — Per-category anomaly maps, VisA: candle, capsules, cashew

# %%
repro.show("F29", ids)

# %% [markdown]
# ## F30 — Per-category anomaly maps, VisA: chewinggum, fryum, macaroni1

# %%
repro.show("F30", ids)

# %% [markdown]
# ## F31 — Per-category anomaly maps, VisA: macaroni2, pcb1, pcb2

# %%
repro.show("F31", ids)

# %% [markdown]
# ## F32 — Per-category anomaly maps, VisA: pcb3, pcb4, pipe_fryum

# %%
repro.show("F32", ids)

# %% [markdown]
# ## F33 — Per-category anomaly maps, ISIC: skin

# %%
repro.show("F33", ids)

# %% [markdown]
# ## F34 — Per-category anomaly maps, TN3K: thyroid

# %%
repro.show("F34", ids)

# %% [markdown]
# ## F35 — Per-category anomaly maps, CVC-ColonDB: colon

# %%
repro.show("F35", ids)

# %% [markdown]
# ## F36 — Per-category anomaly maps, BrainMRI: brain

# %%
repro.show("F36", ids)
