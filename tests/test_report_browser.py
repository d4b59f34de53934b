"""REPORT: results/<profile>/index.html renders in headless Chromium (screenshot + DOM checks).

The page is built from fake runs in a temporary folder (tables, a few figures, the index). CI installs
Debian's `chromium` (.ci/run); without it the test is skipped and says why.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.experiments import kinds, report
from glocal_lib.experiments.provenance import SMOKE_LABEL
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.screenshot import browser_screenshot, find_browser, run_browser


def chromium() -> str | None:
    return find_browser()


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1280, 1400)) -> Path:
    res = browser_screenshot(page, out, size)
    assert out.is_file(), f"chromium wrote no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    return out


def dump_dom(page: Path) -> str:
    res = run_browser(["--dump-dom", "--virtual-time-budget=4000", page.resolve().as_uri()])
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def build_fake_site(root: Path) -> Path:
    """Tables, a handful of figures and the index from fake runs (what `reproduce` would write)."""
    reg = load_registry(profile="smoke")
    profile = FakeProfile("smoke", root)
    store = FakeStore(profile)
    populate(reg, store)
    kinds.build_tables(reg, store, ["T1", "T2", "T3", "T7", "TE", "TX"], root / "tables")
    kinds.build_figures(reg, store, ["F3", "F5", "F9"], root / "figures")
    return report.build_index(reg, root, profile)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if chromium() is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium; CI installs it)")
    return build_fake_site(tmp_path_factory.mktemp("site") / "smoke")


def test_index_renders_with_banner_tables_and_figures(site: Path, tmp_path: Path) -> None:
    shot = screenshot(site, tmp_path / "index.png")
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1200
    assert img.std() > 10, "screenshot is blank"
    # the smoke banner is a red band at the very top of the page
    top = img[:30].reshape(-1, 3).mean(0)
    assert top[0] > 140 and top[1] < 80 and top[2] < 80, f"no red smoke banner at the top (mean RGB {top})"

    dom = dump_dom(site)
    assert "smoke-banner" in dom and SMOKE_LABEL in dom
    for aid in ("T1", "T3", "TX", "F3", "F5", "F9"):
        assert f'data-artifact="{aid}"' in dom
    assert 'href="tables/T1.html"' in dom and 'src="figures/F3.png"' in dom
    assert "not generated yet" in dom  # artifacts not built in this fake site say so


def test_table_page_renders(site: Path, tmp_path: Path) -> None:
    page = site.parent / "tables" / "T1.html"
    dom = dump_dom(page)
    assert SMOKE_LABEL in dom and "provenance" in dom and "GlocalCLIP" in dom
    shot = screenshot(page, tmp_path / "t1.png", size=(1400, 900))
    assert np.asarray(Image.open(shot).convert("L")).std() > 5


def rendered_width(page: Path, width: int) -> int:
    """The page's laid-out width (document scrollWidth) in a `width`-px wide window."""
    probe = page.with_name(f"{page.stem}.width-probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace(
        "</body>", "<script>document.body.setAttribute('data-width', document.documentElement.scrollWidth)"
                   "</script></body>"), encoding="utf-8")
    res = run_browser(["--dump-dom", f"--window-size={width},900", "--virtual-time-budget=4000",
                        probe.resolve().as_uri()])
    probe.unlink()
    found = re.search(r'data-width="(\d+)"', res.stdout)
    assert found, res.stderr[-2000:]
    return int(found.group(1))


@pytest.mark.parametrize("aid", ["T1", "T2", "T3", "T7", "TE", "TX"])
def test_tables_are_readable_at_1400_px(site: Path, aid: str) -> None:
    """No horizontal scrolling at 1400 px: the proposed method's column is on screen."""
    assert rendered_width(site.parent / "tables" / f"{aid}.html", 1400) <= 1400
