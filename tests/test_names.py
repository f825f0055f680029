"""Names that become parts of paths are checked in one place (patchbench.layout.check_name)."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT
from patchbench import cli
from patchbench.config import ConfigError, validate_config
from patchbench.layout import Layout, PathNameError, check_name

BAD = ["a/b", "..", "../up", ".hidden", "x..y", "/abs/path/model", "", "-flag", "a b", "a\\b", 7]
GOOD = ["gpt2", "toy-gpt2", "organism-facts", "capitals", "gpt-j-6B", "v1.2", "my_model"]


@pytest.mark.parametrize("name", BAD)
def test_unsafe_names_are_refused_with_the_rule_and_a_fix(name):
    with pytest.raises(PathNameError) as err:
        check_name(name, "model name")
    msg = str(err.value)
    assert msg.startswith(f"model name {name!r}: ") and "Fix: rename it, e.g. '" in msg and "'..'" in msg


@pytest.mark.parametrize("name", GOOD)
def test_safe_names_pass(name):
    assert check_name(name, "model name") == name


def test_layout_refuses_an_unsafe_name_wherever_it_spells_a_path():
    lay = Layout("results")
    for call in (
        lambda: lay.prompts("../m", "ioi"),
        lambda: lay.cache("m", "a/b"),
        lambda: lay.cell_file("sweeps", "m/x", "ioi", "str", "mlp", "all", 1),
        lambda: lay.model_dir(".m"),
        lambda: Layout.robustness_names("exp/1", "m"),
    ):
        with pytest.raises(PathNameError):
            call()
    assert lay.prompts("{model}", "{task}") == "results/prompts/{model}/{task}.parquet"  # rule patterns pass


def _demo() -> dict:
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


@pytest.mark.parametrize("section", ["models", "tasks", "experiments"])
def test_the_config_refuses_an_unsafe_name_before_its_schema(section):
    cfg = _demo()
    first = next(iter(cfg[section]))
    cfg[section] = {"../" + first: cfg[section][first], **cfg[section]}
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    assert f"config key '{section}'" in str(err.value) and "'../" in str(err.value)
    assert "Fix: rename the" in str(err.value)


def test_sweep_name_flag_is_checked_before_anything_loads(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(
            "sweep --model m --prompts p.parquet --corruption str --site mlp --out r.parquet --name ../x".split()
        )
    assert err.value.code == 2
    out = capsys.readouterr().err
    assert "argument --name: --name '../x': is not a safe file-name part" in out and "Traceback" not in out


def test_the_default_model_name_is_the_directory_basename(tmp_path):
    model_dir = tmp_path / "nested" / "mymodel"
    model_dir.mkdir(parents=True)
    assert cli.default_model_name(str(model_dir)) == "mymodel"
    assert cli.default_model_name(str(model_dir) + "/") == "mymodel"
    assert cli.default_model_name("EleutherAI/gpt-j-6B") == "gpt-j-6B"
    assert cli.default_model_name("gpt2") == "gpt2"
