"""patchbench.config: one schema with every default, the same defaulted config as Snakemake's validator."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from patchbench.config import ConfigError, default, load_config, schema, validate_config, validate_entry
from patchbench.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {
    "models": {"m": {"source": "toy"}, "gpt2": {}},
    "tasks": {"ioi": {"n_prompts": 3}},
    "experiments": {"e": {"task": "ioi", "models": ["m"], "site": "attn_head"}},
}


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml", "standins.yaml"])
def test_loader_fills_the_same_defaults_as_snakemake(name, tmp_path):
    """Snakemake's validator on the schema as loaded (the registries' enums, patterns and corruption
    sections filled in) fills in the same defaults as patchbench's loader."""
    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    theirs = copy.deepcopy(raw)
    filled = tmp_path / "schema.yaml"
    filled.write_text(yaml.safe_dump(schema()))
    validate(theirs, str(filled))
    assert load_config(ROOT / "config" / name) == theirs


def test_every_default_comes_from_the_schema():
    cfg = validate_config(copy.deepcopy(MINIMAL))
    exp = cfg["experiments"]["e"]
    assert (exp["position"], exp["windows"], exp["corruptions"], exp["heads"]) == (
        "all",
        [1],
        ["str", "gn"],
        None,
    )
    assert cfg["attribution"]["windows"] is None and cfg["attribution"]["k"] == 2.0
    model = cfg["models"]["m"]
    assert model["resources"] == {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 2}
    assert (model["hub_name"], model["path"], model["init"]) == (None, None, "trained")
    assert cfg["tasks"]["ioi"] == {"n_prompts": 3, "seed": 0, "allow_fewer": False, "options": {}}
    # defaults are copies: filling one entry does not change another's
    cfg["experiments"]["e"]["windows"].append(3)
    assert validate_config(copy.deepcopy(MINIMAL))["experiments"]["e"]["windows"] == [1]
    assert default("experiment.position") == "all" and default("noise.nu") == 3.0
    assert default("model.memory_budget_mb") == 1024
    with pytest.raises(KeyError, match="task.n_prompts"):
        default("task.n_prompts")


def test_derived_model_defaults_are_decided_by_the_model_spec():
    cfg = validate_config(copy.deepcopy(MINIMAL))
    toy = ModelSpec.from_config("m", cfg["models"]["m"], "out")
    hub = ModelSpec.from_config("gpt2", cfg["models"]["gpt2"], "out")
    assert toy.path == str(Path("out", "models", "m")) and toy.hub_name is None
    assert hub.hub_name == "gpt2" and hub.path is None and hub.dtype == "float32"
    assert validate_entry("model", {}) == cfg["models"]["gpt2"]
    with pytest.raises(ConfigError, match="'dtyp' was unexpected"):
        ModelSpec.from_config("m", {"dtyp": "float32"}, "out")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["experiments"]["e"].__setitem__("site", "heads"),
            r"experiments\.e\.site.*'heads' is not one of",
        ),
        (
            lambda c: c["tasks"]["ioi"].__setitem__("n_prompts", 0),
            r"tasks\.ioi\.n_prompts.*less than the minimum",
        ),
        (lambda c: c.__setitem__("nosie", {}), r"'nosie' was unexpected"),
        (
            lambda c: c["experiments"]["e"].__setitem__("models", ["m2"]),
            r"experiment 'e': unknown model 'm2'",
        ),
        (
            lambda c: c["experiments"]["e"].__setitem__("task", "factual"),
            r"task 'factual' has no entry under `tasks:`",
        ),
    ],
)
def test_bad_configs_name_the_key(mutate, message):
    cfg = copy.deepcopy(MINIMAL)
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_workflow_supplies_no_default_of_its_own():
    """Rules and scripts read the validated config: no ``.get("<schema key>", default)`` there, nor in the CLI."""
    keys = set()

    def walk(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for v in node.values():
                walk(v)

    walk(schema())
    files = [*ROOT.glob("workflow/rules/*.smk"), *ROOT.glob("workflow/scripts/*.py"), ROOT / "Snakefile"]
    files.append(ROOT / "src" / "patchbench" / "cli.py")
    found = [
        (f.name, m.group(1))
        for f in files
        for m in re.finditer(r"""\.get\(\s*["'](\w+)["']\s*,""", f.read_text())
        if m.group(1) in keys
    ]
    assert not found, f"defaults of schema keys outside the schema: {found}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gaussian", r"'gaussian' is not a corruption: use one of str, gn"),
        ("gn@mu=1", r"gn has no setting 'mu' \(its settings: n_samples, nu, seed, sigma\)"),
        ("gn@nu=big", r"gn setting 'nu' expects float, got 'big'"),
        ("resample@seed=1,seed=2", r"sets 'seed' twice"),
    ],
)
def test_corruption_values_are_checked_against_the_registry(value, message):
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"]["corruptions"] = ["str", value]
    with pytest.raises(ConfigError, match=r"config key 'experiments.e.corruptions': .*" + message):
        validate_config(cfg)


def test_corruption_sections_come_from_the_registry():
    """A corruption with settings has a config section with their defaults, written in its module."""
    cfg = validate_config(copy.deepcopy(MINIMAL))
    assert cfg["resample"] == {"seed": 0}
    assert cfg["experiments"]["e"]["directions"] == ["denoising"]
    assert schema()["$defs"]["experiment"]["properties"]["site"]["enum"][:2] == ["attn_head", "head_q"]
