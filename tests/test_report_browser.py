"""The Snakemake report's landing page in a real browser (headless Chromium through Selenium).

A small workflow (the robustness and generic-figure rules on simulated sweeps) builds its report;
the browser loads it and checks what a reader sees first: the title at the top of the window (the
page opens at its top although it is taller than the window), the landing page at full width, and
each experiment's figure drawn inline. Needs Debian's ``chromium`` and ``chromium-driver`` (.ci/run
installs them). ``PATCHBENCH_REPORT_SCREENSHOT=path.png`` keeps the screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import snakemake
from patchbench.analysis.report_page import LANDING_ID
from patchbench.config import default
from test_robustness_workflow import _project  # noqa: I001

WINDOW = (1280, 720)


def browser():
    """Headless Chromium driven by Debian's chromedriver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    driver_path, chromium = (
        shutil.which("chromedriver"),
        shutil.which("chromium") or shutil.which("chromium-browser"),
    )
    if not (driver_path and chromium):
        raise RuntimeError("the report's browser test needs chromium and chromium-driver: apt-get install chromium "
                           "chromium-driver (.ci/run installs them)")  # fmt: skip
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


LANDING_FACTS = f"""
const landing = document.getElementById("{LANDING_ID}");
const prose = landing.closest(".prose");
const scroller = landing.closest(".overflow-auto");
const h1 = prose.querySelector("h1");
const t = h1.getBoundingClientRect();
const imgs = Array.from(prose.querySelectorAll(".pb-fig img")).map(i => {{
  const r = i.getBoundingClientRect();
  const text = i.closest(".pb-exp").querySelector(".pb-text").getBoundingClientRect();
  return {{complete: i.complete, natural: i.naturalWidth, width: r.width, data: i.src.startsWith("data:image/png"),
          beside: r.left >= text.right - 1 && r.top < text.bottom}};
}});
return {{title: h1.textContent, top: t.top, bottom: t.bottom, proseWidth: prose.getBoundingClientRect().width,
        scrollTop: scroller.scrollTop, scrollHeight: scroller.scrollHeight, clientHeight: scroller.clientHeight,
        viewport: [window.innerWidth, window.innerHeight], images: imgs}};
"""


def landing_page(report: Path, screenshot: Path) -> dict:
    """Load ``report`` in headless Chromium, return what :data:`LANDING_FACTS` measures, save a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(report.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, LANDING_ID))
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
        )
        facts = driver.execute_script(LANDING_FACTS)
        driver.save_screenshot(str(screenshot))
        return facts
    finally:
        driver.quit()


def check_landing_page(facts: dict, title: str) -> None:
    """What a reader must see on opening the report."""
    width, height = facts["viewport"]
    assert facts["title"].strip() == title
    assert facts["scrollHeight"] > facts["clientHeight"], (
        "the page must be taller than the window for this check"
    )
    assert facts["scrollTop"] == 0 and 0 <= facts["top"] < facts["bottom"] < height / 3, (
        facts
    )  # opens at its top
    assert facts["proseWidth"] > 0.6 * width, facts  # full width, not a narrow column
    assert facts["images"], "no figure on the landing page"
    for img in facts["images"]:
        assert img["complete"] and img["natural"] > 100 and img["data"], img
        assert img["width"] > 0.3 * width, img  # drawn at a readable size
        assert img["beside"], img  # beside the experiment's summary, not below it


@pytest.mark.slow
def test_report_landing_page_in_headless_chromium(tmp_path):
    proj = _project(tmp_path)
    res = snakemake("--cores", "2", "robustness", "--quiet", "all", cwd=proj)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = snakemake("--cores", "2", "robustness", "--report", "report.html", cwd=proj)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    assert "WARNING/" not in rep.stderr and "ERROR/" not in rep.stderr, rep.stderr[-3000:]  # docutils
    shot = Path(os.environ.get("PATCHBENCH_REPORT_SCREENSHOT", tmp_path / "landing.png"))
    facts = landing_page(proj / "report.html", shot)
    check_landing_page(facts, default("report.title"))
    assert len(facts["images"]) == 1 and shot.stat().st_size > 20_000
