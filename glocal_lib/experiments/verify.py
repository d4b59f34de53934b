"""`glocal verify` and artifact RC: does THIS environment reproduce the released AnomalyCLIP code?

The two released checkpoints of zqhang/AnomalyCLIP are evaluated exactly as its ``test.sh`` runs
them (``--features_list 24 --image_size 518 --depth 9 --n_ctx 12 --t_n_ctx 4``, sigma 4 = test.py's
default, fp32, no feature cache): ``9_12_4_multiscale/epoch_15.pth`` (trained on VisA) on MVTec AD,
``9_12_4_multiscale_visa/epoch_15.pth`` (trained on MVTec AD) on VisA. Every per-category value is
set beside the repository's own logs (paper/anomalyclip_released_checkpoint_logs.csv); a verdict
says whether all agree within the tolerance. Before GPU-days of training, this is the quick check
that weights, data folders and evaluator are right.

Files are identified by their git blob id (``git hash-object``), the id the repository tree lists.
In the smoke profile the checkpoints are stand-ins: the AnomalyCLIP smoke training runs exported in
the official format, evaluated on the synthetic stand-ins (and every output says so).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.config import PRECISIONS
from glocal_lib.errors import ConfigError, GlocalError, RunError, WeightsError
from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.paper_values import category_key, load_paper_table
from glocal_lib.experiments.registry import Registry, load_registry
from glocal_lib.experiments.tables import LONG_COLUMNS, Table, long_row, to_markdown, write_table
from glocal_lib.io import atomic_write_json, git_blob_id
from glocal_lib.metrics.summary import MEAN_ROW

ARTIFACT = "RC"
PRESET = "anomalyclip"  # the released scripts' configuration (top layer, local x4)
REPO_URL = "https://github.com/zqhang/AnomalyCLIP"
CHECKPOINTS_ENV = "GLOCAL_ANOMALYCLIP_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "weights/AnomalyCLIP/checkpoints"
TEST_SH = {"image_size": 518, "sigma": 4.0, "precision": "fp32",  # test.sh + test.py defaults
           "normal_length": 12, "anomaly_length": 12, "deep_depth": 9, "deep_length": 4}
# (level, metric) as the log / transcription names them -> our metric key
LOG_METRICS = {("pixel", "AUROC"): "pixel_auroc", ("pixel", "AUPRO"): "aupro_cflow",
               ("image", "AUROC"): "image_auroc", ("image", "AP"): "image_ap"}
ROW = "AnomalyCLIP, released checkpoint"


class VerifyError(GlocalError):
    """A file `glocal verify` needs is missing (the message names it and where to get it)."""


@dataclass(frozen=True)
class Checked:
    """One checkpoint as found: the registry's facts about the released file + what is on disk."""

    file: str  # path inside the repository's checkpoints/ folder
    blob: str  # the released file's git blob id
    train: str
    eval: str
    log: str
    path: Path
    found_blob: str

    @property
    def is_released(self) -> bool:
        return self.found_blob == self.blob

    def describe(self, names: dict[str, str]) -> str:
        head = f"{names[self.eval]}: prompts {self.path} (git blob {self.found_blob})"
        if self.is_released:
            return f"{head} = the released {self.file} (trained on {names[self.train]})"
        return (f"{head} is NOT the released {self.file} (blob {self.blob}); maybe retrained or another "
                "file: evaluated anyway, so its differences say nothing about this environment")


def checkpoint_dir(folder: str | Path | None = None) -> Path:
    """--checkpoints, else $GLOCAL_ANOMALYCLIP_CHECKPOINTS, else weights/AnomalyCLIP/checkpoints."""
    return Path(folder or os.environ.get(CHECKPOINTS_ENV) or DEFAULT_CHECKPOINTS).expanduser()


def find_checkpoints(registry: Registry, folder: str | Path) -> list[Checked]:
    """The released checkpoints under `folder` (a clone's checkpoints/), identified by blob id.

    Raises VerifyError naming every missing file and where to get it.
    """
    folder = Path(folder)
    missing, out = [], []
    for ck in registry.released_checkpoints(ARTIFACT):
        path = folder / ck["file"]
        if not path.is_file():
            missing.append(f"  {path}  ({ck['file']}: AnomalyCLIP prompts trained on "
                           f"{registry.dataset_name(ck['train'])}, evaluated on {registry.dataset_name(ck['eval'])}; "
                           f"git blob {ck['blob']})")
            continue
        out.append(Checked(file=ck["file"], blob=ck["blob"], train=ck["train"], eval=ck["eval"], log=ck["log"],
                           path=path, found_blob=git_blob_id(path)))
    if missing:
        raise VerifyError("released AnomalyCLIP checkpoint(s) not found:\n" + "\n".join(missing) + "\n"
                          f"Get them with `git clone {REPO_URL}` (they are in its checkpoints/ folder, stored "
                          f"in git) and pass --checkpoints AnomalyCLIP/checkpoints (or set ${CHECKPOINTS_ENV}).")
    return out


def check_inputs(profile: Any, checked: Sequence[Checked]) -> None:
    """Weights and dataset folders exist (one error listing all that are missing), before any work."""
    problems = []
    if profile.weights is not None:
        from glocal_lib.model.backbone import resolve_weights_path

        try:
            resolve_weights_path(profile.weights)
        except WeightsError as err:
            problems.append(f"  CLIP weights: {err}")
    if not profile.synthetic:
        for ck in checked:
            root = profile.dataset_root(ck.eval)
            if not root.is_dir():
                problems.append(f"  dataset {ck.eval}: folder {root} not found; pass --{ck.eval} DIR (its official "
                                f"layout; data_manifests/{ck.eval}.yaml says where to get it)")
    if problems:
        raise VerifyError("glocal verify cannot start:\n" + "\n".join(problems))


# ------------------------------------------------------------------------------- evaluation
def evaluate(profile: Any, ck: Checked, *, progress: bool = False) -> Path:
    """One eval run of the checkpoint on its evaluation set, with test.sh's settings (finished runs
    are reused: the run id includes the file's blob id)."""
    from glocal_lib.engine import EvalSpec, run_eval
    from glocal_lib.model.checkpoint import infer_official_config, official_state

    state, source = official_state(ck.path)
    implied = infer_official_config(state, source)
    if implied["method"] != "anomalyclip":
        raise WeightsError(f"{ck.path} holds {implied['method']} prompts, not AnomalyCLIP's (ctx_pos / ctx_neg)")
    shapes = {k: implied[k] for k in ("normal_length", "anomaly_length", "deep_depth", "deep_length")}
    spec = EvalSpec(name=f"anomalyclip-released-{ck.train}@{ck.eval}", dataset=ck.eval, preset=PRESET,
                    variant=None, overrides=shapes, checkpoint=ck.path,
                    sigma=None if profile.synthetic else TEST_SH["sigma"], samples_per_category=0,
                    use_cache=False)
    return run_eval(spec, profile, progress=progress)


def compare(registry: Registry, results: Sequence[tuple[Checked, Path]], *, stand_in: bool) -> pd.DataFrame:
    """Long rows (LONG_COLUMNS): per category and metric, ours vs the released log."""
    from glocal_lib.engine import load_run

    art = registry.artifact(ARTIFACT)
    log = load_paper_table(art["paper"]["file"])
    out = []
    for ck, run_dir in results:
        run = load_run(run_dir)
        name = registry.dataset_name(ck.eval)
        ours = run.metrics()
        ours = ours.assign(key=ours["category"].astype(str).map(lambda c: MEAN_ROW if c == MEAN_ROW else category_key(c)))
        sub = log[log["dataset"] == name]
        logged = {((MEAN_ROW if not r.category else r.category_key), LOG_METRICS[(r.level, r.metric)]): float(r.value)
                  for r in sub.itertuples() if (r.level, r.metric) in LOG_METRICS}
        cats = [c for c in dict.fromkeys(ours["key"]) if c != MEAN_ROW]
        if not stand_in:  # every category the log has, ours missing or not
            cats += [c for c, _ in logged if c != MEAN_ROW and c not in cats]
        section = f"{name} ← {ck.file} (trained on {registry.dataset_name(ck.train)})"
        for cat in [*cats, MEAN_ROW]:
            for metric in LOG_METRICS.values():
                hit = ours[(ours["key"] == cat) & (ours["metric"] == metric)]["value"]
                rv = float(hit.iloc[0]) * 100 if len(hit) and not pd.isna(hit.iloc[0]) else np.nan
                out.append(long_row(ARTIFACT, section=section, domain=registry.domain_of(ck.eval), row=ROW,
                                    dataset=name, category=cat, metric=metric, reproduced=rv,
                                    paper=logged.get((cat, metric), np.nan), run_ids=run.run_id, note=ck.log))
    return pd.DataFrame(out, columns=LONG_COLUMNS)


def verdict(df: pd.DataFrame, tolerance: float, *, stand_in: bool) -> str:
    """One line: all within ±tolerance, or which categories and metrics differ / are missing."""
    cells = df[~df["paper"].isna()]
    missing = cells[cells["reproduced"].isna()]
    bad = cells[(cells["diff"].abs() > tolerance + 1e-9)]
    n = len(cells)

    def where(rows: pd.DataFrame, with_diff: bool) -> str:
        items = [f"{r.dataset}/{r.category} {r.metric}" + (f" ({r.diff:+.2f})" if with_diff else "")
                 for r in rows.itertuples()]
        return ", ".join(items[:12]) + (f", ... (+{len(items) - 12})" if len(items) > 12 else "")

    if stand_in:
        return (f"VERDICT (smoke, stand-ins): the check ran end to end on synthetic stand-ins with checkpoints "
                f"exported from smoke training runs; its comparison with the released log is NOT meaningful "
                f"({len(bad)} of {n - len(missing)} compared values differ by more than ±{tolerance:g}, as expected)")
    if n and bad.empty and missing.empty:
        return (f"VERDICT: all {n} values within ±{tolerance:g} of the released logs: this environment and "
                "evaluator reproduce the released code")
    parts = []
    if not bad.empty:
        parts.append(f"{len(bad)} of {n} values differ by more than ±{tolerance:g}: {where(bad, True)}")
    if not missing.empty:
        parts.append(f"{len(missing)} values not computed: {where(missing, False)}")
    return "VERDICT: this environment does NOT reproduce the released logs: " + "; ".join(parts)


def rc_body(registry: Registry, profile: Any, checked: Sequence[Checked], runs: Sequence[Path],
            *, stand_in: bool) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The RC artifact's long rows, its notes (verdict first, the identity of every file) and run ids."""
    art = registry.artifact(ARTIFACT)
    df = compare(registry, list(zip(checked, runs)), stand_in=stand_in)
    line = verdict(df, float(art.get("tolerance", 0.1)), stand_in=stand_in)
    names = {k: registry.dataset_name(k) for k in {c.train for c in checked} | {c.eval for c in checked}}
    sigma = "4 scaled to the smoke image size" if stand_in else f"{TEST_SH['sigma']:g}"
    settings = (f"evaluated as {REPO_URL} test.sh: preset {PRESET} (--features_list 24 = top layer, depth, n_ctx "
                f"and t_n_ctx from the file), image size {profile.image_size}, sigma {sigma}, precision "
                f"{profile.precision}, features recomputed per image (no cache), batch-independent scores")
    notes = [line, *(ck.describe(names) for ck in checked), settings,
             "published column = the repository's own logs of these checkpoints "
             f"({art['paper']['file']}); PRO = the released AUPRO approximation (cflow)"]
    if not stand_in:
        off = {k: (getattr(profile, k), v) for k, v in TEST_SH.items()
               if k in ("image_size", "precision") and getattr(profile, k) != v}
        if off:
            notes.append("NOT test.sh's settings: " + ", ".join(f"{k} {a} (test.sh: {b})" for k, (a, b) in off.items()))
    else:
        notes.insert(1, "STAND-INS (smoke): the checkpoints are official-format {'prompt_learner': ...} files made in this "
                        "run (glocal reproduce: the AnomalyCLIP smoke training runs, exported with "
                        "model.export_official), the data synthetic stand-ins; the paper profile evaluates the "
                        "released files")
    return df, notes, sorted({Path(r).name for r in runs})


def rc_table(registry: Registry, profile: Any, checked: Sequence[Checked], runs: Sequence[Path],
             *, stand_in: bool) -> Table:
    """The RC artifact: per-category table, verdict and the identity of every file in the notes."""
    art = registry.artifact(ARTIFACT)
    df, notes, run_ids = rc_body(registry, profile, checked, runs, stand_in=stand_in)
    prov = prov_mod.build(ARTIFACT, art["title"], profile=profile, glocal_preset=registry.glocal_preset,
                          presets=[PRESET], run_ids=run_ids, sources=[f"paper/{art['paper']['file']} (results log)"],
                          notes=notes)
    return Table(ARTIFACT, art["title"], df, ["category"], ["metric"], prov, "section", notes)


# ------------------------------------------------------------------- the record drawing reads
def record_path(results_root: str | Path) -> Path:
    """`<results>/verify/RC.json`: which files were checked (blob ids, paths) and their eval run ids, so
    RC is redrawn from the results folder alone (no checkpoint files, no data)."""
    return Path(results_root) / "verify" / f"{ARTIFACT}.json"


def write_record(results_root: str | Path, checked: Sequence[Checked], runs: Sequence[Path], *,
                 stand_in: bool) -> Path:
    items = [{"file": c.file, "blob": c.blob, "train": c.train, "eval": c.eval, "log": c.log, "path": str(c.path),
              "found_blob": c.found_blob, "run_id": Path(r).name} for c, r in zip(checked, runs, strict=True)]
    return atomic_write_json(record_path(results_root), {"stand_in": stand_in, "checkpoints": items})


def read_record(results_root: str | Path) -> tuple[list[Checked], list[Path], bool] | None:
    """(checked files, their eval run folders, stand-in?) as 02_evaluate recorded them; None if never made."""
    path = record_path(results_root)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    checked = [Checked(file=c["file"], blob=c["blob"], train=c["train"], eval=c["eval"], log=c["log"],
                       path=Path(c["path"]), found_blob=c["found_blob"]) for c in data["checkpoints"]]
    runs = [Path(results_root) / "runs" / "eval" / c["run_id"] for c in data["checkpoints"]]
    unfinished = [r.name for r in runs if not (r / "DONE").is_file()]
    if unfinished:
        raise RunError(f"{path} names eval run(s) {unfinished} that are not finished in {Path(results_root) / 'runs'}; "
                       "notebook 02_evaluate makes them (glocal reproduce --only RC)")
    return checked, runs, bool(data["stand_in"])


def run_verify(registry: Registry, profile: Any, checked: Sequence[Checked], out_dir: str | Path, *,
               stand_in: bool = False, progress: bool = False) -> Table:
    """Evaluate every checkpoint, write RC.{csv,md,html} into `out_dir`, return the table."""
    check_inputs(profile, checked)
    runs = [evaluate(profile, ck, progress=progress) for ck in checked]
    write_record(profile.results_root, checked, runs, stand_in=stand_in)
    table = rc_table(registry, profile, checked, runs, stand_in=stand_in)
    write_table(table, out_dir)
    return table


# ------------------------------------------------------------------------- smoke stand-ins
def export_standins(registry: Registry, profile: Any, folder: str | Path) -> Path:
    """Smoke: export the AnomalyCLIP smoke training runs in the released layout under `folder`
    (<folder>/9_12_4_multiscale/epoch_15.pth ...); trains them first if needed."""
    from glocal_lib.engine import load_run, run_train
    from glocal_lib.model import build_model, export_official

    folder = Path(folder)
    for ck, job in registry.standin_train_jobs(ARTIFACT):
        run = load_run(run_train(job.spec(), profile, progress=False))
        model = build_model(checkpoint=run.checkpoint())
        export_official(model, folder / ck["file"])
    return folder


def evaluate_rc(repro: Any) -> list[Path]:
    """Notebook 02's part of RC: evaluate the checkpoints (smoke: export the stand-ins first) and record
    them for drawing. Paper profile without the released files: says why RC is skipped, returns []."""
    reg, profile = repro.registry, repro.profile
    stand_in = bool(profile.synthetic)
    try:
        folder = export_standins(reg, profile, repro.root / "verify" / "checkpoints") if stand_in else checkpoint_dir()
        checked = find_checkpoints(reg, folder)
    except VerifyError as err:
        print(f"RC not evaluated: {err}")
        return []
    check_inputs(profile, checked)
    runs = [evaluate(profile, ck, progress=repro.progress) for ck in checked]
    write_record(repro.root, checked, runs, stand_in=stand_in)
    return runs


def draw_rc(registry: Registry, store: Any) -> tuple[pd.DataFrame, list[str], list[str]] | None:
    """RC's rows, notes and run ids from the record and its runs only; None when RC was never evaluated."""
    found = read_record(store.root)
    if found is None:
        return None
    checked, runs, stand_in = found
    return rc_body(registry, store.profile, checked, runs, stand_in=stand_in)


def reproduce_rc(repro: Any, ids: Sequence[str], *, required: bool = False) -> Table | None:
    """Notebook 06's RC section (drawing only: 02_evaluate evaluated the checkpoints). None when RC is not
    selected or was not evaluated; the latter is an error when RC was asked for explicitly (`required`)."""
    if ARTIFACT not in ids:
        return None
    table = repro.draw_artifact(ARTIFACT)
    if table is None and required:
        raise RunError(f"RC was not evaluated in {repro.root} (no {record_path(repro.root)}): notebook 02_evaluate "
                       f"evaluates it (glocal reproduce --profile {repro.profile.name} --only RC); in the paper "
                       f"profile it needs the released checkpoints (${CHECKPOINTS_ENV})")
    return table


# ---------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glocal verify", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[1].replace("``", "") + "\n\n" + (
        "Example:\n  glocal verify --weights weights/ViT-L-14-336px.pt --checkpoints AnomalyCLIP/checkpoints \\\n"
        "      --mvtec /data/mvtec --visa /data/visa\n\n"
        "Good result: 'VERDICT: all 116 values within ±0.1 of the released logs' (27 categories + 2 means,\n4 metrics each). It writes\n"
        "<results>/tables/RC.{md,csv,html} (per category: ours / released log (difference)).\n"
        "Exit status 0 when the verdict is good, 3 when values differ, 1 on an input error."))
    p.add_argument("--weights", help="CLIP ViT-L/14@336 OpenAI archive ViT-L-14-336px.pt "
                   "(default: $GLOCAL_WEIGHTS or weights/ViT-L-14-336px.pt)")
    p.add_argument("--checkpoints", help=f"the checkpoints/ folder of a clone of {REPO_URL} (holds "
                   f"9_12_4_multiscale/epoch_15.pth and 9_12_4_multiscale_visa/epoch_15.pth; default "
                   f"${CHECKPOINTS_ENV} or {DEFAULT_CHECKPOINTS})")
    p.add_argument("--mvtec", help="MVTec AD folder, official layout (default $GLOCAL_DATA_ROOT_MVTEC or <data root>/mvtec)")
    p.add_argument("--visa", help="VisA folder, official layout or split_csv (default $GLOCAL_DATA_ROOT_VISA or <data root>/visa)")
    p.add_argument("--datasets", nargs="+", choices=("mvtec", "visa"), help="check only these evaluation sets")
    p.add_argument("--profile", default="paper", help="paper (default) | smoke (stand-ins, for testing the command)")
    p.add_argument("--device", help="cuda (paper default) | cpu | cuda:1 ...")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (scores are per image at any size)")
    p.add_argument("--results", help="results root (default: the profile's, e.g. results/paper)")
    p.add_argument("--image-size", type=int, help=f"input size (default {TEST_SH['image_size']}, as test.sh)")
    p.add_argument("--precision", choices=PRECISIONS, help="default fp32 (as test.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def verify_cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of `glocal verify`."""
    from glocal_lib.engine import load_profile

    args = build_parser().parse_args(list(argv or []))
    roots = {k: v for k, v in (("mvtec", args.mvtec), ("visa", args.visa)) if v}
    over: dict[str, Any] = {"weights": args.weights, "device": args.device, "eval_batch_size": args.batch_size,
                            "results_root": args.results, "image_size": args.image_size,
                            "precision": args.precision}
    if args.profile != "smoke":
        over["image_size"] = args.image_size or TEST_SH["image_size"]
        over["precision"] = args.precision or TEST_SH["precision"]
    profile = load_profile(args.profile, **over)
    if roots:
        profile = profile.replace(dataset_roots={**profile.dataset_roots, **roots})
    registry = load_registry(profile=profile.plan_profile, datasets=args.datasets)
    if profile.synthetic and not args.checkpoints:
        raise ConfigError("--profile smoke needs --checkpoints: a folder of official-format files in the released "
                          "layout (e.g. exported with glocal_lib.model.export_official)")
    checked = find_checkpoints(registry, checkpoint_dir(args.checkpoints))
    if profile.banner:
        print(f"[{profile.name}] {profile.banner}")
    out_dir = Path(profile.results_root) / "tables"
    table = run_verify(registry, profile, checked, out_dir, stand_in=bool(profile.synthetic),
                       progress=not args.quiet)
    print(to_markdown(table))
    print(table.notes[0])
    print(f"written: {out_dir / (ARTIFACT + '.md')} (.csv, .html)")
    good = table.notes[0].startswith("VERDICT: all")
    return 0 if good or profile.synthetic else 3

