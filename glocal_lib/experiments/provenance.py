"""Provenance of every table and figure: profile, presets, code commit, the runs it was read from.

One function builds the record and two render it (text lines for CSV headers and figure footers,
an HTML block), so every output file says the same thing the same way — and a smoke output can
never be mistaken for a paper result.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

SMOKE_LABEL = "synthetic data, random model — not paper results"
AUPRO_NOTE = ("PRO = aupro_cflow, the released code's AUPRO approximation (what the paper reports); "
              "aupro_mvtec = the MVTec-official AUPRO (shown in TX)")
def epoch_note(method: str, picks: set[tuple[str, int | None]], dataset_name: Any, mark: str) -> str:
    """The note under a table with best-epoch runs: which test set chose which epoch."""
    where = "; ".join(f"epoch {e} on {dataset_name(v)}" for v, e in sorted(picks, key=str))
    return (f"{method}: the training epoch was picked as the released AdaCLIP trainer does, the best mean pixel "
            f"F1-max over categories on an evaluation set's TEST data ({where}) — a selection on test data; "
            f"{mark} marks the cells of that dataset")


LAMBDA_NOTE = ("GlocalCLIP (released-script preset): lambda picked per evaluation dataset as the best "
               "on that dataset's TEST set, as the released script did — a selection on test data")


def banner_for(profile: Any) -> str:
    """The profile's banner; any synthetic or smoke profile gets the smoke label whatever it says."""
    banner = str(getattr(profile, "banner", "") or "")
    name = str(getattr(profile, "name", ""))
    synthetic = bool(getattr(profile, "is_synthetic", False)) or name == "smoke"
    if synthetic and SMOKE_LABEL not in banner:
        banner = f"{SMOKE_LABEL} ({banner})" if banner else SMOKE_LABEL
    return banner


def code_commit() -> str:
    """Commit of the code that drew the artifact (the runs record their own in env.json)."""
    from glocal_lib.engine.runs import git_commit

    git = git_commit()  # {"commit": "unknown"} outside a git checkout or without git
    return f"{git.get('commit', 'unknown')}{'+dirty' if git.get('dirty') else ''}"


def build(artifact_id: str, title: str, *, profile: Any, glocal_preset: str, presets: list[str],
          run_ids: list[str], runs_commit: str = "unknown", sources: list[str] | None = None,
          notes: list[str] | None = None) -> dict[str, Any]:
    """The provenance record written beside (and inside) an artifact."""
    return {
        "artifact": artifact_id,
        "title": title,
        "profile": str(getattr(profile, "name", profile)),
        "banner": banner_for(profile),
        "glocalclip_preset": glocal_preset,
        "presets": sorted(set(presets)),
        "git_commit": code_commit(),
        "runs_git_commit": runs_commit,
        "run_ids": sorted(set(run_ids)),
        "aupro": AUPRO_NOTE,
        "published_values": sources or [],
        "notes": notes or [],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def lines(prov: dict[str, Any], max_runs: int | None = None) -> list[str]:
    """Plain-text lines (CSV '#' headers, Markdown, figure footers)."""
    runs = prov["run_ids"]
    shown = runs if max_runs is None or len(runs) <= max_runs else [*runs[:max_runs], f"... (+{len(runs) - max_runs})"]
    out = []
    if prov["banner"]:
        out.append(f"{prov['banner'].upper()}")
    out += [
        f"artifact: {prov['artifact']} — {prov['title']}",
        f"profile: {prov['profile']}; GlocalCLIP preset: {prov['glocalclip_preset']}; "
        f"presets: {', '.join(prov['presets']) or '-'}",
        f"code commit: {prov['git_commit']}; runs' commit: {prov['runs_git_commit']}; created {prov['created']}",
        f"runs ({len(runs)}): {', '.join(shown) or 'none'}",
        f"AUPRO: {prov['aupro']}",
    ]
    if prov["published_values"]:
        out.append(f"published values: {', '.join(prov['published_values'])}")
    out += [f"note: {n}" for n in prov["notes"]]
    return out


def footer(prov: dict[str, Any]) -> str:
    """Compact footer for figures."""
    head = f"{prov['banner'].upper()} | " if prov["banner"] else ""
    runs = prov["run_ids"]
    run_txt = ", ".join(runs[:3]) + (f" (+{len(runs) - 3} more)" if len(runs) > 3 else "")
    notes = "".join(f" | note: {n}" for n in prov.get("notes", []))
    return (f"{head}{prov['artifact']} | profile {prov['profile']} | preset {prov['glocalclip_preset']} | "
            f"commit {prov['git_commit'][:12]} | runs: {run_txt or 'none'}{notes}")


def html_block(prov: dict[str, Any]) -> str:
    """A <details> block with the full record, plus the banner as a visible warning."""
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(', '.join(v) if isinstance(v, list) else str(v))}</td></tr>"
        for k, v in prov.items() if k != "banner"
    )
    banner = (f'<div class="banner" role="alert">{html.escape(prov["banner"])}</div>' if prov["banner"] else "")
    return f'{banner}<details class="provenance"><summary>provenance</summary><table>{rows}</table></details>'
