"""patchbench.cell: experiments expand into Cells once; a Cell owns its paths, spec and fingerprint."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from patchbench.cell import Cell, agreement_cells, attribution_cells, cells_of, experiment_cells
from patchbench.config import ConfigError, load_config
from patchbench.layout import Layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    return load_config(ROOT / "config" / "demo.yaml")


def test_experiments_expand_into_cells_with_schema_defaults(demo):
    cells = cells_of(demo)
    assert list(cells) == list(demo["experiments"])
    factual = cells["factual_mlp_last"]
    assert [(c.corruption, c.window) for c in factual] == [(c, w) for c in ("str", "gn") for w in (1, 3, 5)]
    assert {(c.model, c.task, c.site, c.position, c.heads, c.method) for c in factual} == {
        ("organism-facts", "factual", "mlp", "subject_last", None, "exact")
    }
    assert {c.position for c in cells["ioi_s1io_heads"]} == {"all"}  # omitted in demo.yaml: the schema's
    assert sum(len(v) for v in cells.values()) == 27


def test_a_cell_owns_its_files(demo):
    cell = cells_of(demo)["factual_mlp_last"][4]  # gn, window 3
    base = Path("results")
    assert cell.raw_path == str(base / "sweeps/organism-facts/factual/gn/mlp-subject_last_w3.parquet")
    assert cell.effects_path == str(base / "effects/organism-facts/factual/gn/mlp-subject_last_w3.parquet")
    assert cell.chunks_dir == str(base / "sweeps/organism-facts/factual/gn/mlp-subject_last_w3.chunks")
    assert cell.log_path == str(base / "logs/sweeps/organism-facts/factual/gn/mlp-subject_last_w3.log")
    assert cell.effects_log_path == str(
        base / "logs/effects/organism-facts/factual/gn/mlp-subject_last_w3.log"
    )
    at = cell.as_method("attribution")
    assert at.raw_path == str(base / "attrib/organism-facts/factual/gn/mlp-subject_last_w3.raw.parquet")
    assert at.effects_path == str(base / "attrib/organism-facts/factual/gn/mlp-subject_last_w3.parquet")
    assert (
        at.log_path
        == at.effects_log_path
        == str(base / "logs/attrib/organism-facts/factual/gn/mlp-subject_last_w3.log")
    )
    assert cell.reported() == cell  # engine.method: exact
    assert cell.label == "factual gn mlp-subject_last window 3 on organism-facts"
    pattern = Cell.pattern(Layout("R"))
    assert pattern.raw_path == str(
        Path("R/sweeps/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet")
    )
    one = experiment_cells(demo, "factual_mlp_last", model="{model}")[0]
    assert one.raw_path == str(base / "sweeps/{model}/factual/str/mlp-subject_last_w1.parquet")


def test_a_cell_builds_what_the_engine_runs(demo):
    cfg = copy.deepcopy(demo)
    cfg["noise"]["n_samples"] = 4
    cfg["models"]["organism-facts"]["memory_budget_mb"] = 64
    cell = cells_of(cfg)["factual_mlp_last"][5]
    spec = cell.sweep_spec
    assert (spec.corruption, spec.site, spec.position, spec.window) == ("gn", "mlp", "subject_last", 5)
    assert spec.noise.n_samples == 4 and spec.n_samples == 4 and spec.memory_budget_mb == 64
    assert cell.model_spec.path == str(Path("models", "organisms", "organism-facts"))  # shipped
    assert cell.metrics == ("prob", "logit_diff", "kl")
    assert cell.identity == {
        "model": "organism-facts",
        "task": "factual",
        "corruption": "gn",
        "site": "mlp",
        "position": "subject_last",
        "window": 5,
        "method": "exact",
    }


def _fingerprint(cfg, experiment="factual_mlp_last", i=0, **extra):
    return cells_of(cfg)[experiment][i].fingerprint(**extra)


def test_fingerprint_follows_what_determines_the_numbers(demo):
    gn = 3  # factual_mlp_last: gn, window 1
    base_str, base_gn = _fingerprint(demo), _fingerprint(demo, i=gn)
    assert len(base_str) == 16 and base_str != base_gn
    assert _fingerprint(copy.deepcopy(demo)) == base_str  # stable
    changed = {
        "noise": lambda c: c["noise"].__setitem__("nu", 2.0),
        "task": lambda c: c["tasks"]["factual"].__setitem__("n_prompts", 7),
        "model": lambda c: c["models"]["organism-facts"].__setitem__("dtype", "float16"),
        "resources": lambda c: c["models"]["organism-facts"]["resources"].__setitem__("threads", 2),
        "circuit": lambda c: c["models"]["organism-facts"].__setitem__("circuit", "circuit.json"),
        "robustness": lambda c: c["robustness"].__setitem__("n_boot", 50),
        "engine.method": lambda c: c["engine"].__setitem__("method", "attribution"),
        "filter": lambda c: c.__setitem__("filter_correct", False),
    }
    moved = {}
    for what, mutate in changed.items():
        cfg = copy.deepcopy(demo)
        mutate(cfg)
        moved[what] = (_fingerprint(cfg) != base_str, _fingerprint(cfg, i=gn) != base_gn)
    assert moved == {
        "noise": (False, True),  # STR adds no noise
        "task": (True, True),
        "model": (True, True),
        "resources": (False, False),
        "circuit": (False, False),  # the robustness report's known circuit, not the sweep's numbers
        "robustness": (False, False),
        "engine.method": (False, False),
        "filter": (True, True),
    }
    assert _fingerprint(demo, weights="abc") != base_str != _fingerprint(demo, weights="abd")
    cell = cells_of(demo)["factual_mlp_last"][0]
    assert cell.as_method("attribution").fingerprint() != cell.fingerprint()


def test_attribution_cells_follow_attribution_windows_and_engine_method(demo):
    assert [c.window for c in attribution_cells(demo, "factual_mlp_last")] == [1, 1]  # demo: windows [1]
    cfg = copy.deepcopy(demo)
    cfg["attribution"]["windows"] = None
    assert len(attribution_cells(cfg, "factual_mlp_last")) == 6
    cfg = copy.deepcopy(demo)
    cfg["engine"]["method"] = "attribution"
    cells = attribution_cells(cfg, "factual_mlp_last")
    assert len(cells) == 6 and {c.method for c in cells} == {"attribution"}
    assert cells_of(cfg)["factual_mlp_last"][0].reported().effects_path == cells[0].effects_path
    # the agreement keeps to attribution.windows even when every window is estimated
    cfg["attribution"]["windows"] = [3]
    agreed = agreement_cells(cfg, "organism-facts", "factual")
    assert [(c.corruption, c.position, c.window) for c in agreed] == [
        (c, p, 3) for c in ("gn", "str") for p in ("each", "subject_last")
    ]
    assert agreement_cells(cfg, "organism-docstring", "factual") == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["ioi_heads"].__setitem__("windows", [1, 3]), "windows [1, 3] only apply to site mlp"),
        (lambda e: e["ioi_heads"].__setitem__("site", "head_v"), "site head_v needs `heads"),
        (
            lambda e: e.__setitem__("again", dict(e["factual_mlp_last"], windows=[5])),
            "'factual_mlp_last' and 'again' both sweep factual str mlp-subject_last window 5 on organism-facts",
        ),
    ],
)
def test_per_site_rules_and_duplicate_cells_are_refused(demo, mutate, message):
    cfg = copy.deepcopy(demo)
    mutate(cfg["experiments"])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cells_of(cfg)


def test_directions_and_corruption_variants_are_cells_of_their_own(demo):
    """A noising cell and a GN variant (``gn@nu=1``) have their own files, labels, identity, spec and
    fingerprint; a denoising cell's are those it always had."""
    cfg = copy.deepcopy(demo)
    exp = cfg["experiments"]["ioi_heads"]
    exp["corruptions"], exp["directions"] = ["str", "gn@nu=1"], ["denoising", "noising"]
    cells = experiment_cells(cfg, "ioi_heads")
    assert [(c.corruption, c.direction) for c in cells] == [
        ("str", "denoising"), ("str", "noising"), ("gn@nu=1", "denoising"), ("gn@nu=1", "noising"),
    ]  # fmt: skip
    plain = cells_of(demo)["ioi_heads"][0]
    assert cells[0].raw_path == plain.raw_path and cells[0].fingerprint() == plain.fingerprint()
    assert "direction" not in cells[0].identity and "direction" not in cells[0].sweep_spec.to_dict()
    noising = cells[1]
    assert noising.raw_path == str(
        Path("results/sweeps/organism-ioi/ioi/str_noising/attn_head-all_w1.parquet")
    )
    assert (
        noising.identity["direction"] == "noising" and noising.sweep_spec.to_dict()["direction"] == "noising"
    )
    assert noising.label == "ioi str noising attn_head-all window 1 on organism-ioi"
    assert noising.fingerprint() != plain.fingerprint()
    gn1 = cells[2]
    assert gn1.raw_path == str(Path("results/sweeps/organism-ioi/ioi/gn@nu=1/attn_head-all_w1.parquet"))
    assert gn1.sweep_spec.noise.nu == 1.0 and gn1.sweep_spec.to_dict()["noise"]["nu"] == 1.0
    gn3 = cells_of(demo)["ioi_heads"][1]
    assert gn3.corruption == "gn" and gn3.sweep_spec.noise.nu == 3.0
    assert len({c.fingerprint() for c in (gn1, gn3, cells[3])}) == 3
    # the noise section enters GN cells' fingerprints, not STR's
    louder = copy.deepcopy(cfg)
    louder["noise"]["seed"] = 5
    again = experiment_cells(louder, "ioi_heads")
    assert again[0].fingerprint() == cells[0].fingerprint() and again[2].fingerprint() != gn1.fingerprint()
