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
# # 02_evaluate — Evaluation of the trained (and zero-shot) models, one dataset (`datasets=[...]`) or all
#
# Part of `glocal reproduce` (the notebooks run in order 00 → 06). Open this file in JupyterLab (with jupytext)
# and edit the parameters cell, or run it alone with papermill: `jupytext --to ipynb notebooks/02_evaluate.py`,
# then `papermill notebooks/02_evaluate.ipynb out.ipynb -p profile smoke -p datasets '["visa"]'`.

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
ids = repro.artifact_ids(only=only)
eval_dirs = repro.evaluate(ids)
print(f"{len(eval_dirs)} eval runs ready in {repro.timings.get('evaluate', 0):.1f} s")

# %%
repro.status(ids).query('kind == "eval"')

# %% [markdown]
# ## Metrics per dataset
#
# One row per evaluation run, read from its `metrics.csv` and `scores.csv`: the dataset-level value of each
# table metric (%, the mean over the categories where it is defined), "undefined" where no category defines it,
# "n/a" where the dataset does not measure it, and the images it scored.

# %%
repro.eval_metrics(ids)
