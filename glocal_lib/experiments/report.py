"""results/<profile>/index.html: one browsable page listing every table and figure with its provenance.

Built only from the files the table and figure steps wrote (and their .provenance.json sidecars);
links are relative so the folder can be copied, zipped or served as it is.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from glocal_lib.errors import RunError
from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.kinds import kind_of
from glocal_lib.experiments.registry import Registry
from glocal_lib.io import atomic_write_text

TABLES_DIR = "tables"
FIGURES_DIR = "figures"
NOTEBOOKS_DIR = "notebooks"

CSS = """body{font-family:system-ui,-apple-system,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:1em 1.5em}header h1{margin:0 0 .2em;font-size:1.5em}
header p{margin:.2em 0;opacity:.9}main{padding:1em 1.5em}
.banner{background:#b00020;color:#fff;font-weight:700;font-size:1.15em;padding:.7em 1.5em;
text-transform:uppercase;letter-spacing:.04em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .8em}
.card h3{margin:.1em 0 .3em;font-size:1em}.card .id{font-weight:700;color:#1f3b57}
.card img{width:100%;height:150px;object-fit:contain;background:#f4f4f4;border-radius:3px}
.card .meta{font-size:11px;color:#666}.missing{color:#b00020;font-weight:600}
.links a{margin-right:.6em;font-size:13px}table.summary{border-collapse:collapse;font-size:13px}
table.summary td,table.summary th{border:1px solid #ddd;padding:3px 8px;text-align:left}
h2{border-bottom:2px solid #1f3b57;padding-bottom:.2em}
nav{margin:.6em 0;line-height:1.8}table.headline{margin:.4em 0;font-size:12px}
table.headline caption{text-align:left;font-weight:600}"""


def _unreadable(path: Path, err: Exception) -> RunError:
    return RunError(f"{path} is unreadable ({err}); redraw it: glocal reproduce --draw (or rerun its notebook)")


def _prov(path: Path) -> dict[str, Any] | None:
    """An artifact's provenance sidecar; None when it was never drawn."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _unreadable(path, err) from None


def _card(reg: Registry, root: Path, aid: str, art: dict[str, Any], is_table: bool) -> tuple[str, bool]:
    folder = TABLES_DIR if is_table else FIGURES_DIR
    prov = _prov(root / folder / f"{aid}.provenance.json")
    exts = ("html", "md", "csv") if is_table else ("png", "pdf")
    files = [(e, f"{folder}/{aid}.{e}") for e in exts if (root / folder / f"{aid}.{e}").is_file()]
    present = bool(files)
    links = " ".join(f"<a href='{html.escape(href)}'>{e.upper()}</a>" for e, href in files)
    thumb = ""
    if not is_table and (root / folder / f"{aid}.png").is_file():
        thumb = f"<a href='{folder}/{aid}.png'><img src='{folder}/{aid}.png' alt='{html.escape(aid)}' loading='lazy'></a>"
    if prov:
        meta = (f"profile {html.escape(prov['profile'])} · preset {html.escape(prov['glocalclip_preset'])} · "
                f"commit {html.escape(str(prov['git_commit'])[:10])} · {len(prov['run_ids'])} runs · "
                f"{html.escape(prov['created'])}")
        runs = html.escape(", ".join(prov["run_ids"][:3]) + (" …" if len(prov["run_ids"]) > 3 else ""))
        meta += f"<br><span title='{html.escape(', '.join(prov['run_ids']))}'>runs: {runs or '—'}</span>"
    else:
        meta = "<span class='missing'>not generated yet</span>"
    headline = (_headline(root / folder / f"{aid}.csv", art.get("headline", "GlocalCLIP"))
                if is_table and kind_of(reg, aid).headline else "")
    body = (f"<div class='card' id='{html.escape(aid)}' data-artifact='{html.escape(aid)}'>"
            f"<h3><span class='id'>{html.escape(aid)}</span> {html.escape(art.get('title', ''))}</h3>"
            f"{thumb}{headline}<div class='links'>{links or '<span class=missing>missing</span>'}</div>"
            f"<div class='meta'>{meta}</div></div>")
    return body, present


def _headline(csv: Path, method: str = "GlocalCLIP") -> str:
    """The Mean row of a comparison table's proposed method (the entry's `headline`, default GlocalCLIP):
    reproduced / published (difference) per metric."""
    if not csv.is_file():
        return ""
    from glocal_lib.experiments.tables import METRIC_LABELS, cell_text, read_table_csv

    try:
        df = read_table_csv(csv)
    except (OSError, ValueError) as err:
        raise _unreadable(csv, err) from None
    rows = df[(df["row"] == method) & (df["dataset"] == "Mean")]
    if rows.empty:
        return ""
    items = "".join(f"<tr><td>{html.escape(METRIC_LABELS.get(r['metric'], r['metric']))}</td>"
                    f"<td>{html.escape(cell_text(r))}</td></tr>" for _, r in rows.iterrows())
    return f"<table class='summary headline'><caption>{html.escape(method)}, Mean</caption>{items}</table>"


def build_index(registry: Registry, root: str | Path, profile: Any, title: str = "GlocalCLIP reproduction") -> Path:
    """Write <root>/index.html for every artifact of the registry (present or not)."""
    root = Path(root)
    banner = prov_mod.banner_for(profile)
    arts = registry.artifacts
    table_cards, figure_cards, n_present = [], [], 0
    for aid, art in arts.items():
        is_table = kind_of(registry, aid).output == "table"
        card, present = _card(registry, root, aid, art, is_table)
        n_present += present
        (table_cards if is_table else figure_cards).append(card)
    notebooks = sorted((root / NOTEBOOKS_DIR).glob("*.ipynb")) if (root / NOTEBOOKS_DIR).is_dir() else []
    # nb.INCOMPLETE.ipynb is the one executing now (this index is drawn by the last notebook): it is
    # renamed nb.ipynb when it finishes; nb.FAILED / nb.INTERRUPTED keep their names, shown as such
    names = sorted({p.name.replace(".INCOMPLETE.", ".") for p in notebooks})
    nb_links = " ".join(f"<a href='{NOTEBOOKS_DIR}/{html.escape(n)}'>{html.escape(n)}</a>" for n in names) or "none yet"
    profile_name = html.escape(str(getattr(profile, "name", profile)))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)} — {profile_name}</title><style>{CSS}</style></head><body>",
        (f"<div class='banner' id='smoke-banner' role='alert'>{html.escape(banner)}</div>" if banner else ""),
        f"<header><h1>{html.escape(title)}</h1>",
        f"<p>profile <b id='profile'>{profile_name}</b> · GlocalCLIP preset "
        f"<b>{html.escape(registry.glocal_preset)}</b> · code commit {html.escape(prov_mod.code_commit()[:12])}</p>",
        f"<p><span id='artifact-count'>{n_present} of {len(arts)}</span> artifacts generated · "
        "each table cell: reproduced / published (difference); † = lambda picked on that dataset's test set "
        "(released script)</p></header><main>",
        "<nav class='links'>" + " ".join(f"<a href='#{html.escape(a)}'>{html.escape(a)}</a>" for a in arts) + "</nav>",
        "<h2 id='tables'>Tables</h2><div class='grid'>", *table_cards, "</div>",
        "<h2 id='figures'>Figures</h2><div class='grid'>", *figure_cards, "</div>",
        f"<h2 id='notebooks'>Executed notebooks</h2><p class='links'>{nb_links}</p>",
        f"<h2>Notes</h2><p>{html.escape(prov_mod.AUPRO_NOTE)}.</p><p>{html.escape(prov_mod.LAMBDA_NOTE)}.</p>",
        f"<p>Regenerate: <code>glocal reproduce --profile {profile_name}</code> (add <code>--only T1,F5</code> or "
        "<code>--datasets visa</code> for a subset). Each table and figure carries its provenance: profile, "
        "presets, code commit and the run ids it was read from.</p>",
        "</main></body></html>",
    ]
    return atomic_write_text(root / "index.html", "\n".join(parts))
