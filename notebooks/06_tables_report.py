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
# # 06_tables_report — Main tables T1, T2, TE, ViP2-CLIP's Tables 1-3 (V1, V2, V3), the released-checkpoint check (RC), KAnoCLIP's Tables 1-2 (KT1, KT2) and the results index
#
# Part of `glocal reproduce` (the notebooks run in order 00 → 06). Open this file in JupyterLab (with jupytext)
# and edit the parameters cell, or run it alone with papermill: `jupytext --to ipynb
# notebooks/06_tables_report.py`, then `papermill notebooks/06_tables_report.ipynb out.ipynb -p profile smoke -p
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
ids = repro.artifact_ids("06_tables_report", only)
repro.require_runs(ids)  # made by 01_train / 02_evaluate: this notebook only draws

# %% [markdown]
# ## T1 — Industrial zero-shot anomaly detection (image AUROC/AP, pixel AUROC/PRO)

# %%
repro.show("T1", ids)

# %% [markdown]
# ## T2 — Medical zero-shot anomaly detection (image-level: HeadCT, BrainMRI, Br35H; pixel-level: the rest)

# %%
repro.show("T2", ids)

# %% [markdown]
# ## TE — Appendix E: per-category results for every dataset and method

# %%
repro.show("TE", ids)

# %% [markdown]
# ## V1 — ViP2-CLIP Table 1: industrial zero-shot anomaly detection, trained on MVTec AD (VisA for MVTec AD), image AUROC/AP/F1, pixel AUROC/PRO/F1
#
# ViP2-CLIP's own protocol (`protocols: vip2clip`): the MVTec AD-trained prompts on every other dataset, VisA-trained
# on MVTec AD; F1 = F1-max over the precision-recall curve, as ViP2-CLIP reports it.

# %%
repro.show("V1", ids)

# %% [markdown]
# ## V2 — ViP2-CLIP Table 2: medical zero-shot anomaly detection, trained on MVTec AD (image-level: HeadCT, BrainMRI, Br35H; pixel-level: the rest), AUROC/AP-or-PRO/F1

# %%
repro.show("V2", ids)

# %% [markdown]
# ## V3 — ViP2-CLIP Table 3: efficiency on VisA (training time, inference time per image, peak memory, trainable parameters)
#
# Times and peak memory from the saved run records (`timing.json`: the training run on VisA, the evaluation
# run on VisA), on the hardware each run names; parameters counted at the full-size ViT-L/14@336 architecture.
# Smoke: a CPU and the tiny random tower, so only the parameter counts compare with the paper.

# %%
repro.show("V3", ids)

# %% [markdown]
# ## RC — Check your setup: the released AnomalyCLIP checkpoints, evaluated as its test.sh does, vs its logs
#
# Paper profile: the two released checkpoints (`$GLOCAL_ANOMALYCLIP_CHECKPOINTS`, default
# `weights/AnomalyCLIP/checkpoints`), evaluated by 02_evaluate as AnomalyCLIP's `test.sh` does, per category
# beside the repository's logs, with a verdict (same as `glocal verify`). Smoke profile: stand-in checkpoints
# exported from the AnomalyCLIP smoke training runs.

# %%
from IPython.display import Markdown

from glocal_lib.experiments.verify import reproduce_rc

rc = reproduce_rc(repro, ids, required=only is not None)  # drawn from what 02_evaluate evaluated
rc if rc is not None else Markdown("*RC is not drawn in this execution (not selected, or never evaluated).*")

# %% [markdown]
# ## KT1 — KAnoCLIP Table 1: industrial zero-shot anomaly detection, trained on MVTec AD (VisA for MVTec AD)

# %%
repro.show("KT1", ids)

# %% [markdown]
# ## KT2 — KAnoCLIP Table 2: medical zero-shot anomaly detection, trained on MVTec AD

# %%
repro.show("KT2", ids)

# %% [markdown]
# ## The results index
#
# `index.html` lists every table and figure with its provenance; its picture (`index.png`, the README's
# screenshot in the smoke profile) is rendered from it.

# %%
index = repro.build_index()
print(f"results index: {index}")
repro.screenshot_index(readme=only is None)  # a full reproduction refreshes the README's screenshot
