"""A picture of results/<profile>/index.html, made by the reproduction (notebook 06): `<results>/index.png`.

Headless Chromium renders the page when it is installed (CI installs Debian's `chromium`); without a
browser, matplotlib draws the index's list of artifacts instead and the picture says so. A full smoke
reproduction into the default results folder also refreshes the README's screenshot,
results/readme/index.png (a subset, `--only`, does not: its index is mostly "missing").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from glocal_lib.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
README_SCREENSHOT = REPO / "results" / "readme" / "index.png"
SIZE = (1400, 1400)  # the reading width
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-dev-shm-usage"]


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_browser(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a fresh profile folder each call (no state shared between runs)."""
    exe = find_browser()
    if exe is None:
        raise ConfigError(f"no browser found (looked for {', '.join(BROWSERS)}); install chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile_dir:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": profile_dir})


def browser_screenshot(page: Path, out: Path, size: tuple[int, int] = SIZE) -> subprocess.CompletedProcess[str]:
    """`size` pixels of the page's top. Headless Chromium leaves the last tiles of its window unpainted
    now and then, so it renders a taller window and the picture is cropped from its top."""
    from PIL import Image

    tall = out.with_name(out.name + ".tall.png")
    res = run_browser([f"--screenshot={tall}", f"--window-size={size[0]},{size[1] + 400}",
                       "--virtual-time-budget=2000", page.resolve().as_uri()])
    if tall.is_file():
        with Image.open(tall) as im:
            im.crop((0, 0, *size)).save(out, format="png")
        tall.unlink()
    return res


def summary_picture(root: Path, out: Path) -> Path:
    """Without a browser: the artifacts the index lists (id, title, runs), from their provenance sidecars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, banner = [], ""
    for folder in ("tables", "figures"):
        for path in sorted((root / folder).glob("*.provenance.json")):
            prov = json.loads(path.read_text(encoding="utf-8"))
            banner = banner or str(prov.get("banner", ""))
            rows.append((str(prov.get("artifact", path.name.split(".")[0])), folder[:-1],
                         str(prov.get("title", ""))[:90], str(len(prov.get("run_ids", [])))))
    fig = plt.figure(figsize=(SIZE[0] / 100, SIZE[1] / 100), dpi=100)
    fig.text(0.02, 0.98, f"{root.name} results index (index.html; drawn without a browser)", fontsize=16,
             va="top", weight="bold")
    if banner:
        fig.text(0.02, 0.955, banner.upper(), fontsize=11, va="top", color="white", weight="bold",
                 bbox={"facecolor": "#b00020", "edgecolor": "none", "pad": 3})
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.axis("off")
    if rows:
        table = ax.table(cellText=rows, colLabels=["id", "kind", "title", "runs"], loc="upper left",
                         colWidths=[0.06, 0.07, 0.8, 0.05], cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
    else:
        ax.text(0, 1, "no table or figure drawn yet", va="top", fontsize=12)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def index_screenshot(root: str | Path, profile_name: str, readme: bool = False) -> Path:
    """Write `<root>/index.png` from `<root>/index.html`; `readme` (a full reproduction, not a subset) also
    refreshes the README's copy when `root` is the smoke profile's default folder."""
    root = Path(root)
    page, out = root / "index.html", root / "index.png"
    if not page.is_file():
        raise ConfigError(f"{page} does not exist: build the index first (notebook 06_tables_report)")
    tmp = root / "index.png.tmp.png"
    tmp.unlink(missing_ok=True)
    if find_browser() is not None:
        res = browser_screenshot(page, tmp)
        if not tmp.is_file():
            raise ConfigError(f"{find_browser()} wrote no screenshot of {page} (exit status {res.returncode}): "
                              f"{res.stderr.strip()[-500:]}")
    else:
        summary_picture(root, tmp)
    os.replace(tmp, out)
    default_smoke = (REPO / "results" / "smoke").resolve()
    if readme and profile_name == "smoke" and root.resolve() == default_smoke and README_SCREENSHOT.parent.is_dir():
        shutil.copyfile(out, README_SCREENSHOT)
    return out
