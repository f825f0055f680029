"""The config schema: both shipped configs pass, bad configs fail with messages that say what is wrong."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    """The schema as patchbench loads it (the registries' enums and patterns filled in), as a file."""
    from patchbench.config import schema as loaded

    path = tmp_path_factory.mktemp("schema") / "config.schema.yaml"
    path.write_text(yaml.safe_dump(loaded()))
    return str(path)


@pytest.fixture(params=["demo.yaml", "config.yaml"])
def shipped(request, root):
    return yaml.safe_load((root / "config" / request.param).read_text())


def test_shipped_configs_are_valid_and_get_defaults(shipped, schema):
    cfg = copy.deepcopy(shipped)
    validate(cfg, schema)
    assert cfg["noise"]["nu"] == 3.0, "ROME's noise scale is 3 x the embedding std"
    for exp in cfg["experiments"].values():
        assert exp["corruptions"] and exp["windows"] and exp["position"]
        assert set(exp["models"]) <= set(cfg["models"])


def test_minimal_config_gets_every_default(schema):
    cfg = {
        "models": {"m": {"source": "toy"}},
        "tasks": {"ioi": {"n_prompts": 3}},
        "experiments": {"e": {"task": "ioi", "models": ["m"], "site": "attn_head"}},
    }
    validate(cfg, schema)
    assert cfg["results_dir"] == "results" and cfg["figures_dir"] == "figures"
    assert cfg["noise"] == {"nu": 3.0, "n_samples": 1, "seed": 0}
    assert cfg["experiments"]["e"]["corruptions"] == ["str", "gn"]
    assert cfg["experiments"]["e"]["windows"] == [1]
    assert cfg["models"]["m"]["dtype"] == "float32"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.__setitem__("experimnets", {}), r"'experimnets' was unexpected"),
        (
            lambda c: c["models"]["organism-arithmetic"].__setitem__("dtyp", "float32"),
            r"'dtyp' was unexpected",
        ),
        # (a task name the registry lacks is refused after the schema: test_tasks_pairs.py)
        (lambda c: c["tasks"].__setitem__("1ioi", {"n_prompts": 3}), r"'1ioi' does not match"),
        (lambda c: c["experiments"]["ioi_heads"].__setitem__("task", "ioi-2"), r"'ioi-2' does not match"),
        (
            lambda c: c["tasks"].__setitem__("mine", {"file": "x.csv", "n_prompts": 0}),
            r"0 is less than the minimum",
        ),
        (
            lambda c: c["experiments"]["factual_mlp_last"].__setitem__("windows", [0, 3]),
            r"0 is less than the minimum of 1",
        ),
        (
            lambda c: c["experiments"]["factual_mlp_last"].__setitem__("windows", [3, 3]),
            r"non-unique elements",
        ),
        (lambda c: c["tasks"]["ioi"].__setitem__("n_prompts", -5), r"-5 is less than the minimum of 1"),
        (lambda c: c["experiments"]["ioi_heads"].__setitem__("site", "heads"), r"'heads' is not one of"),
        (lambda c: c["models"]["organism-arithmetic"].__setitem__("device", "gpu"), r"'gpu' does not match"),
        (lambda c: c["noise"].__setitem__("nu", 0), r"less than or equal to the minimum of 0"),
    ],
)
def test_bad_configs_are_refused_with_readable_messages(root, schema, mutate, message):
    cfg = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    mutate(cfg)
    with pytest.raises(WorkflowError, match=message):
        validate(cfg, schema)
