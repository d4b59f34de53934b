"""`glocal train` and `glocal eval`: the engine from the command line, same parameters as the notebooks.

Both print the run folder(s) they produced; a finished run is reported, not recomputed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from glocal_lib.config import PRECISIONS
from glocal_lib.engine.profiles import available_profiles, load_profile, parse_override


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("profile (presets/profiles.yaml) and its overrides")
    g.add_argument("--profile", default="smoke", help=f"run profile: {', '.join(available_profiles())} (default smoke)")
    g.add_argument("--data-root", help="folder holding one sub-folder per dataset (paper: or $GLOCAL_DATA_ROOT)")
    g.add_argument("--weights", help="backbone weight file (paper: ViT-L-14-336px.pt)")
    g.add_argument("--backbone", help="open_clip config name, e.g. ViT-L-14-336-quickgelu or glocal-tiny-8")
    g.add_argument("--image-size", type=int, help="input size in pixels (paper 518)")
    g.add_argument("--results", help="results root of this profile (default results/<profile>)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    g.add_argument("--precision", choices=PRECISIONS, help="autocast precision (released: fp32)")
    g.add_argument("--batch-size", type=int, help="batch size (train: 8 as published; eval: any)")
    g.add_argument("--profile-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any other profile field, e.g. --profile-set cache_dtype=fp32")
    m = parser.add_argument_group("method")
    m.add_argument("--preset", default=None, help="model preset from presets/methods.yaml (default glocalclip-released)")
    m.add_argument("--variant", default="auto",
                   help="preset variant ('auto': the one for the train/eval dataset; 'none': base values)")
    m.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="ModelConfig field override, e.g. --override gcl_lambda=0.1 (repeatable)")
    m.add_argument("--seed", type=int, default=111, help="seed (prompt initialisation, shuffling); default 111")
    m.add_argument("--no-cache", action="store_true", help="recompute vision features every batch (slow; for checks)")
    m.add_argument("--quiet", action="store_true", help="no progress bars")


def _profile(args: argparse.Namespace) -> Any:
    over: dict[str, Any] = dict(parse_override(o) for o in args.profile_set)
    mapping = {"data_root": args.data_root, "weights": args.weights, "backbone": args.backbone,
               "image_size": args.image_size, "device": args.device, "precision": args.precision}
    if args.results:
        mapping["results_root"] = args.results
    over.update({k: v for k, v in mapping.items() if v is not None})
    return load_profile(args.profile, **over)


def _variant(text: str) -> str | None:
    return None if text.lower() in ("none", "base", "") else text


def train_cli(argv: Sequence[str] | None = None) -> int:
    """glocal train: train prompts on one dataset (a resumable run)."""
    from glocal_lib.data.registry import train_label
    from glocal_lib.engine.train import TrainSpec, run_train

    p = argparse.ArgumentParser(prog="glocal train", description="Train the learnable prompts on one dataset's "
                                "test split (the zero-shot protocol), or on several concatenated; resumes an "
                                "interrupted run; a finished run is not recomputed. Prints the run folder.")
    p.add_argument("--train-dataset", "--dataset", dest="train_dataset", nargs="+", default=["mvtec"],
                   help="dataset key to train on (default mvtec); several keys train on their concatenation, "
                        "e.g. --dataset mvtec colondb (AdaCLIP's released model A)")
    p.add_argument("--name", help="short run name (default <preset>-<train dataset>)")
    p.add_argument("--epochs", type=int, help="epochs (profile default: smoke 2, paper 15)")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's, Adam 1e-3; AdaCLIP AdamW 0.01)")
    p.add_argument("--validation", help="dataset whose test set ranks the epochs of a select: best_epoch run "
                                        "(default: the preset's; adaclip-released A -> visa, B -> mvtec)")
    p.add_argument("--restart", action="store_true",
                   help="discard an unfinished run's progress (e.g. a corrupt checkpoint) and train it from scratch")
    _common(p)
    args = p.parse_args(argv)
    profile = _profile(args)
    preset = args.preset or "glocalclip-released"
    spec = TrainSpec(name=args.name or f"{preset}-{train_label(args.train_dataset)}", train_dataset=args.train_dataset,
                     preset=preset, variant=_variant(args.variant),
                     overrides=dict(parse_override(o) for o in args.override), seed=args.seed, lr=args.lr,
                     epochs=args.epochs, batch_size=args.batch_size, use_cache=not args.no_cache,
                     validation=args.validation)
    if profile.banner:
        print(f"[{profile.name}] {profile.banner}")
    print(run_train(spec, profile, progress=not args.quiet, restart=args.restart))
    return 0


def _print_undefined(run: Any) -> None:
    """Say which categories have undefined metrics (one label only...) instead of a silent NaN."""
    import pandas as pd

    from glocal_lib.metrics.summary import explain_undefined

    scores = pd.read_csv(run.path / "scores.csv", dtype={"category": str}, keep_default_na=False)
    labels = {str(c): g["label"].tolist() for c, g in scores.groupby("category", sort=False)}
    for line in explain_undefined(run.metrics_json().get("per_category", {}), labels):
        print(f"  {line}")


def eval_cli(argv: Sequence[str] | None = None) -> int:
    """glocal eval: evaluate a trained (or zero-shot) model on datasets; prints folders and mean metrics."""
    import pandas as pd

    from glocal_lib.engine.evaluate import EvalSpec, run_eval
    from glocal_lib.engine.runs import load_run
    from glocal_lib.metrics.summary import MEAN_ROW

    p = argparse.ArgumentParser(prog="glocal eval", description="Evaluate on one or more datasets: per-image "
                                "scores, per-category and mean metrics (both AUPRO variants), figure samples. "
                                "Without --train-run the preset's untrained / zero-shot model is evaluated.")
    p.add_argument("--dataset", "--datasets", dest="datasets", nargs="+", required=True, help="dataset key(s)")
    p.add_argument("--train-run", help="train run folder or run id (from glocal train)")
    p.add_argument("--epoch", type=int, help="checkpoint epoch of the train run (default: the last, or the "
                                             "run's selected epoch when it selects one: select best_epoch)")
    p.add_argument("--name", help="short run name (default <train run name or preset>@<dataset>)")
    p.add_argument("--sigma", type=float, help="Gaussian sigma of the maps (default: preset's, scaled to image size)")
    p.add_argument("--categories", nargs="+", help="evaluate only these categories")
    p.add_argument("--samples-per-category", type=int, help="anomaly maps saved per category for figures")
    p.add_argument("--allow-other-backbone", action="store_true",
                   help="score a train run's prompts with another backbone/weights/image size than it was "
                        "trained with (refused otherwise; recorded in the eval run)")
    _common(p)
    args = p.parse_args(argv)
    profile = _profile(args)
    if profile.banner:
        print(f"[{profile.name}] {profile.banner}")
    base = args.name
    if base is None:
        base = load_run(args.train_run).config.get("name", "run") if args.train_run and "/" in args.train_run \
            else (args.train_run.rsplit("-", 1)[0] if args.train_run else (args.preset or "glocalclip-released"))
    tables = []
    for ds in args.datasets:
        spec = EvalSpec(name=f"{base}@{ds}", dataset=ds, train_run=args.train_run, epoch=args.epoch,
                        preset=args.preset, variant=_variant(args.variant),
                        overrides=dict(parse_override(o) for o in args.override), seed=args.seed, sigma=args.sigma,
                        batch_size=args.batch_size, categories=tuple(args.categories) if args.categories else None,
                        samples_per_category=args.samples_per_category, use_cache=not args.no_cache,
                        allow_other_backbone=args.allow_other_backbone)
        run = load_run(run_eval(spec, profile, progress=not args.quiet))
        print(run.path)
        _print_undefined(run)
        m = run.metrics()
        tables.append(m[m["category"] == MEAN_ROW])
    table = pd.concat(tables).pivot(index="dataset", columns="metric", values="value") * 100
    print(table.round(1).to_string())
    return 0
