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
# # 01_train — Training: every prompt run the artifacts need (comparisons, ablations, UMAP, figures)
#
# Part of `glocal reproduce` (the notebooks run in order 00 → 06). Open this file in JupyterLab (with jupytext)
# and edit the parameters cell, or run it alone with papermill: `jupytext --to ipynb notebooks/01_train.py`,
# then `papermill notebooks/01_train.ipynb out.ipynb -p profile smoke -p datasets '["visa"]'`.

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

# %% [markdown]
# Notebooks 03-06 only draw. Finished runs are reused, unfinished ones resume.

# %%
ids = repro.artifact_ids(only=only)
print(repro.plan(ids).summary())
train_dirs = repro.train(ids)
print(f"{len(train_dirs)} train runs ready in {repro.timings.get('train', 0):.1f} s")

# %%
repro.status(ids).query('kind == "train"')

# %% [markdown]
# ## Loss curves
#
# Every loss term per optimisation step of each training run, read from the run's `losses.csv` (epochs dotted).

# %%
repro.loss_curves(ids)
