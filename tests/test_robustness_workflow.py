"""robustness.smk, the CLI and the report's front page, end to end on simulated raw sweeps."""

from __future__ import annotations

import base64
import json
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from docutils.core import publish_parts
from jinja2 import Environment

from conftest import ROOT, demo_with_experiments, snakemake, workflow_project
from patchbench.analysis.report_page import LANDING_ID, REPORT_HEAD, summary_rst
from patchbench.analysis.robustness import RobustnessSettings
from patchbench.cli import main
from patchbench.config import schema
from patchbench.detection import detect
from patchbench.metrics import effects
from patchbench.rawframe import read_frame, write_frame
from test_robustness import simulate_raw  # noqa: I001

MODEL = "organism-docstring"


def _write_ioi_sweeps(results: Path, rng_seed: int = 0) -> list[Path]:
    """STR and GN raw sweeps of 24 heads: 1.2 restores under both, 2.1 under STR only, 3.3 hurts under both."""
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    a_str = np.zeros(24)
    a_str[[6, 9, 15]] = [0.9, 0.9, -0.9]
    a_gn = a_str.copy()
    a_gn[9] = 0.0
    paths = []
    for corruption, a in (("str", a_str), ("gn", a_gn)):
        raw = simulate_raw(rng, 60, a, corruption=corruption, noise=0.3, model=MODEL)
        path = results / "sweeps" / MODEL / "ioi" / corruption / "attn_head-all_w1.parquet"
        write_frame(raw, path)
        paths.append(path)
    return paths


def test_schema_defaults_are_the_settings_defaults():
    props = schema()["properties"]["robustness"]["properties"]
    defaults = RobustnessSettings()
    configurable = {f.name for f in fields(RobustnessSettings)} - {"k"}  # k: the effects rule's 2 SD
    assert set(props) == configurable
    for name in configurable:
        assert props[name]["default"] == getattr(defaults, name), name


def test_front_page_renders_as_snakemake_renders_it(tmp_path):
    """Jinja2 then docutils, as snakemake.report does with the workflow description; links resolve;
    the experiment's figure is embedded beside its summary."""
    png = tmp_path / "experiment_ioi_heads.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    facts = [{
        "experiment": "ioi_heads", "model": MODEL, "task": "ioi", "site": "attn_head", "positions": "all",
        "n_prompts": 60, "n_cells": 6, "n_boot": 100, "robust": ["1.2", "3.3"],
        "fragile": [{"component": "2.1", "verdict": "depends on corruption", "detected_in": "STR/P +1.00; {{x}}",
                     "uncertain_in": "", "explanation": ""}],
        "recommendations": ["Metric: P_*(answer) = 0.002 *floor* `x` |y| {% raw %}"],
        "files": {"verdicts": f"robustness_ioi_heads_{MODEL}.csv", "figure": f"robustness_ioi_heads_{MODEL}.png"},
        "key_figure": str(png),
    }]  # fmt: skip
    text = summary_rst(facts)
    links = "".join(f"\n.. _{f}: javascript:show('{f}')" for f in facts[0]["files"].values())
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    items = [SimpleNamespace(target=f) for f in facts[0]["files"].values()]
    snake = SimpleNamespace(config={"report": {"title": "My title"}, "suite": "demo"})
    rendered = env.from_string(text + "\n" + links).render(files=items, snakemake=snake)
    html = publish_parts(rendered, writer="html", settings_overrides={"halt_level": 2})["html_body"]
    assert (
        "ioi_heads on organism-docstring" in html
        and "My title</h1>" in html
        and "javascript:show('robustness_ioi_heads_organism-docstring.png')" in html
    )
    assert "{{x}}" in html.replace("{ {", "{{")  # shown, not evaluated
    assert '<div class="pb-exp"><div class="pb-text">' in html and f'id="{LANDING_ID}"' in html
    src = html[html.index('src="data:image/png;base64,') + 5 :].split('"')[0]
    assert (
        base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    )  # line breaks are dropped by the decoder
    assert html.index("My title</h1>") < html.index("<style>")  # the title first
    # the static page (before the workflow has run) opens on the same head
    assert (ROOT / "workflow" / "report" / "workflow.rst").read_text().startswith(REPORT_HEAD)
    # a report without the robustness items (a partial DAG): names, no dangling links
    bare = env.from_string(text).render(files=[], snakemake=snake)
    html = publish_parts(bare, writer="html", settings_overrides={"halt_level": 2})["html_body"]
    assert f"robustness_ioi_heads_{MODEL}.csv" in html and "javascript" not in html


def test_front_page_opens_on_the_practice_benchmark_verdicts(tmp_path):
    """With a practice grid, the landing page states each recommendation's verdict over all
    organisms, links the summary and embeds each task's practice figure, before the experiments."""
    png = tmp_path / "practices_ioi.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(100)))
    practices = {
        "rows": [{"recommendation": "Prefer STR to GN", "comparison": "STR vs GN(nu=3) (f1)", "pairs": 162,
                  "difference": "0.06 [0.02, 0.13]", "verdict": "confirmed"},
                 {"recommendation": "Logit difference over probability for negative components",
                  "comparison": "LD vs P (neg_recall)", "pairs": 114, "difference": "-0.10 [-0.20, -0.01]",
                  "verdict": "contradicted"}],
        "verdict_rule": "Confirmed: the interval lies above 0.",
        "summary": "results/tables/practices_summary.md",
        "figures": [str(png)],
    }  # fmt: skip
    facts = [{
        "experiment": "ioi_heads", "model": MODEL, "task": "ioi", "site": "attn_head", "positions": "all",
        "n_prompts": 60, "n_cells": 6, "n_boot": 100, "robust": [], "fragile": [], "recommendations": [],
        "files": {"verdicts": "v.csv"},
    }]  # fmt: skip
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    snake = SimpleNamespace(config={"report": {"title": "T"}, "suite": "demo"})
    items = [SimpleNamespace(target="practices_summary.md")]
    rendered = env.from_string(
        summary_rst(facts, practices) + "\n.. _practices_summary.md: javascript:show('x')\n"
    )
    html = publish_parts(rendered.render(files=items, snakemake=snake), writer="html",
                         settings_overrides={"halt_level": 2})["html_body"]  # fmt: skip
    assert (
        "<strong>confirmed</strong>: Prefer STR to GN, STR vs GN(nu=3) (f1): 0.06 [0.02, 0.13] (162 pairs)"
        in html
    )
    assert "<strong>contradicted</strong>: Logit difference over probability" in html
    assert html.index("recommendations hold against known circuits") < html.index("ioi_heads on")
    assert "javascript:show('x')" in html and 'alt="practices ioi: F1 of every practice' in html
    src = html[html.index('src="data:image/png;base64,') + 5 :].split('"')[0]
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert "recommendations hold" not in summary_rst(facts)  # no practice grid: no section


def _project(tmp_path: Path) -> Path:
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg = demo_with_experiments(
        {"ioi_heads": {**demo["experiments"]["ioi_heads"], "models": [MODEL]}},
        robustness={"n_boot": 200, "seed": 3},
    )
    # the robustness rules and what they use; the raw sweeps below are their sources
    proj = workflow_project(tmp_path, ["common", "analysis", "attribution", "robustness", "practices"], "config/test.yaml",
                            "\n\nreport: robustness_front_page()\n")  # fmt: skip
    (proj / "config" / "test.yaml").write_text(yaml.safe_dump(cfg))
    for raw_path in _write_ioi_sweeps(proj / "results"):  # and their effects, as the effects rule writes them
        out = proj / "results" / "effects" / raw_path.relative_to(proj / "results" / "sweeps")
        write_frame(detect(effects(read_frame(raw_path))), out)
    return proj


@pytest.mark.slow
def test_robustness_targets_and_the_report_front_page(tmp_path):
    proj = _project(tmp_path)
    res = snakemake("--cores", "2", "robustness", "--quiet", "all", cwd=proj)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stem = proj / "results" / "tables" / f"robustness_ioi_heads_{MODEL}"
    verdicts = (stem.parent / (stem.name + ".csv")).read_text()
    assert "1.2,1,2,-1,robust" in verdicts and "2.1,2,1,-1,depends on corruption,corruption" in verdicts
    md = (stem.parent / (stem.name + ".md")).read_text()
    assert "## Recommendations" in md and "STR only: 2.1" in md
    facts = json.loads((stem.parent / (stem.name + ".json")).read_text())
    assert facts["n_boot"] == 200 and facts["seed"] == 3 and "1.2" in facts["robust"]
    assert (proj / "figures" / f"robustness_ioi_heads_{MODEL}.png").stat().st_size > 5000
    front = (proj / "results" / "robustness" / "summary.rst").read_text()
    assert "ioi\\_heads on organism-docstring" in front and f"`robustness_ioi_heads_{MODEL}.png`_" in front
    rep = snakemake("--cores", "2", "robustness", "--report", "report.html", cwd=proj)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    html = (proj / "report.html").read_text()
    assert "ioi_heads on organism-docstring" in html and "Recommendations" in html
    assert (proj / "figures" / f"experiment_ioi_heads_{MODEL}.png").is_file()  # the front page's figure


def test_cli_on_raw_sweeps_and_on_effects_files(tmp_path, capsys):
    raws = _write_ioi_sweeps(tmp_path)
    out = tmp_path / "out"
    assert main(["robustness", *map(str, raws), "--out", str(out), "--n-boot", "100", "--no-figure"]) == 0
    printed = capsys.readouterr().out.split()
    verdicts = out / f"robustness_ioi_attn_head-all_{MODEL}.csv"
    assert str(verdicts) in printed and "depends on corruption" in verdicts.read_text()
    cells = (out / f"robustness_ioi_attn_head-all_{MODEL}_cells.csv").read_text()
    assert ",bootstrap" in cells
    # effects files alone: the normal approximation, on the same grid
    effects = []
    for raw in raws:
        target = raw.with_name("effects.parquet")
        assert main(["effects", str(raw), "--out", str(target)]) == 0
        effects.append(target.rename(raw.with_name(f"effects_{raw.parent.name}.parquet")))
    assert main(["robustness", *map(str, effects), "--out", str(out), "--name", "e", "--n-boot", "100"]) == 0
    assert ",normal" in (out / f"robustness_e_{MODEL}_cells.csv").read_text()
    assert (out / f"robustness_e_{MODEL}.png").stat().st_size > 5000


def test_cli_refuses_a_mix_of_raw_and_effects(tmp_path, capsys):
    raws = _write_ioi_sweeps(tmp_path)
    eff = tmp_path / "e.parquet"
    assert main(["effects", str(raws[0]), "--out", str(eff)]) == 0
    assert main(["robustness", str(raws[1]), str(eff), "--out", str(tmp_path)]) == 2
    assert "not a mix" in capsys.readouterr().err
