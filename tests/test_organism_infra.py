"""The organisms' shared infrastructure, without trained weights: circuit.json (kinds, classes,
validation against the model), stated properties, the multi-seed config switch and its refusals,
the toy settings of every seed, Table 1's classes from circuit.json beside the classifier, and
`patchbench organisms` refusing a bad circuit.json before any model is measured."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from patchbench.analysis.ioi_classes import class_agreement, read_classes
from patchbench.cli import main
from patchbench.config import ConfigError, seed_name, seed_path, validate_config
from patchbench.errors import InputError
from patchbench.preflight import check_workflow_config
from patchbench.toy.checks import CHECKS, failed_properties
from patchbench.toy.circuit import KINDS, Circuit, CircuitError, check_circuit_file, write_circuit
from patchbench.toy.settings import DEFAULT_MODELS, ToySettings

IOI = {
    "kind": "ioi",
    "heads": {"name_mover": ["1.0"], "s_inhibition": ["0.1"], "backup_name_mover": ["1.1"]},
    "notes": {"backup_name_mover": "takes over when 1.0 is ablated"},
    "unconstrained": ["0.0"],
    "properties": {"clean_p": [0.3, 0.7], "circuit_ablation": [None, 0.2]},
}


def _model_dir(tmp_path, circuit: dict, n_layers: int = 2, n_heads: int = 2):
    d = tmp_path / "org"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"n_layers": n_layers, "n_heads": n_heads}))
    (d / "circuit.json").write_text(json.dumps(circuit))
    return d


def test_every_kind_has_its_classes_in_one_dict_and_a_circuit_round_trips(tmp_path):
    assert {"ioi", "factual"} <= set(KINDS) and "backup_name_mover" in KINDS["ioi"].heads
    assert KINDS["ioi"].tasks == ("ioi", "ioi_s1io", "ioi_abc")
    c = Circuit.from_config(IOI)
    assert c.unconstrained == ((0, 0),) and c.properties["circuit_ablation"] == (None, 0.2)
    assert c.strict_heads(2, 2) == ()  # 0.0 free, the other three in the circuit
    write_circuit(c, tmp_path, "test")
    again = check_circuit_file(_model_dir(tmp_path, json.loads((tmp_path / "circuit.json").read_text())))
    assert again == c


@pytest.mark.parametrize(
    "change, words",
    [
        ({"kind": "poetry"}, ["kind", "poetry"]),
        ({"heads": {"name_mover": ["1.0"], "wizard": ["0.0"]}}, ["unknown head classes", "wizard"]),
        ({"heads": {"name_mover": ["5.0"]}}, ["5.0", "outside a 2 x 2 model"]),
        ({"unconstrained": ["1.0"]}, ["both in the circuit and unconstrained"]),
        ({"mlps": {"subject_enrichment": [1]}}, ["unknown MLP roles"]),
        ({"properties": {"clean_p": 0.5}}, ["[min, max]"]),
        ({"heads": {"name_mover": ["one.zero"]}}, ["'L.H'"]),
    ],
)
def test_a_bad_circuit_json_is_refused_naming_the_file_and_the_fix(tmp_path, change, words):
    d = _model_dir(tmp_path, {**IOI, **change})
    with pytest.raises(CircuitError) as err:
        check_circuit_file(d)
    msg = str(err.value)
    assert str(d / "circuit.json") in msg and "Fix:" in msg, msg
    for w in words:
        assert w in msg, msg
    assert isinstance(err.value, InputError)


def test_patchbench_organisms_refuses_a_bad_circuit_before_measuring(tmp_path, capsys):
    d = _model_dir(tmp_path, {**IOI, "heads": {"name_mover": ["9.0"]}})
    assert main(["organisms", "--dir", str(d.parent), "--check"]) == 2
    err = capsys.readouterr().err
    assert "circuit.json" in err and "9.0" in err and "Fix:" in err
    assert main(["organisms", "--dir", str(tmp_path / "none")]) == 2
    assert "holds no organism" in capsys.readouterr().err


def test_stated_properties_are_compared_with_the_measurement():
    stated = {"clean_p": (0.3, 0.7), "gn_ratio": (0.1, 0.5), "top1": (0.9, None), "absent": (None, 1.0)}
    failures = failed_properties(stated, {"clean_p": 0.5, "gn_ratio": 0.62, "top1": 0.95})
    assert len(failures) == 2
    assert failures[0].startswith("gn_ratio = 0.62") and "[0.1, 0.5]" in failures[0]
    assert "absent is not measured" in failures[1]
    assert failed_properties(stated, {"clean_p": float("nan"), "gn_ratio": 0.2, "top1": 1, "absent": 0})[
        0
    ].startswith("clean_p")
    assert set(CHECKS) >= {"ioi"}  # one check per circuit kind


MULTI = {
    "all_seeds": True,
    "models": {
        "org": {"source": "toy", "path": "models/organisms/org", "seeds": [0, 1, 2]},
        "other": {"source": "toy"},
    },
    "tasks": {"ioi": {"n_prompts": 3}},
    "experiments": {"e": {"task": "ioi", "models": ["other", "org"], "site": "attn_head"}},
}


def test_all_seeds_expands_a_model_into_one_per_seed():
    assert seed_name("org", 0) == "org" and seed_name("org", 2) == "org-seed2"
    assert seed_path("models/organisms/org", 1) == "models/organisms/org-seed1" and seed_path(None, 1) is None
    cfg = validate_config(copy.deepcopy(MULTI))
    assert list(cfg["models"]) == ["org", "other", "org-seed1", "org-seed2"]
    assert cfg["models"]["org-seed2"]["path"] == "models/organisms/org-seed2"
    assert cfg["models"]["org-seed2"]["seeds"] is None and cfg["models"]["org"]["seeds"] == [0, 1, 2]
    assert cfg["experiments"]["e"]["models"] == ["other", "org", "org-seed1", "org-seed2"]
    assert validate_config(copy.deepcopy(cfg)) == cfg  # idempotent
    one = validate_config({**copy.deepcopy(MULTI), "all_seeds": False})
    assert list(one["models"]) == ["org", "other"] and one["experiments"]["e"]["models"] == ["other", "org"]
    assert (
        validate_config({k: v for k, v in copy.deepcopy(MULTI).items() if k != "all_seeds"})["all_seeds"]
        is False
    )


@pytest.mark.parametrize(
    "change, words",
    [
        ({"seeds": [1, 2]}, ["seeds"]),  # seed 0 lives at `path`: it must be listed
        ({"seeds": [0, 0]}, ["seeds"]),
        ({"source": "hub", "path": None, "seeds": [0, 1]}, ["hub model", "Fix"]),
    ],
)
def test_bad_seeds_are_refused(change, words):
    cfg = copy.deepcopy(MULTI)
    cfg["models"]["org"].update(change)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_seed_name_taken_by_another_model_is_refused():
    cfg = copy.deepcopy(MULTI)
    cfg["models"]["org-seed1"] = {"source": "toy", "path": "elsewhere"}
    with pytest.raises(ConfigError, match="org-seed1.*also seed 1"):
        validate_config(cfg)


def test_a_missing_seed_directory_is_refused_before_any_work(tmp_path):
    base = tmp_path / "org"
    cfg = copy.deepcopy(MULTI)
    cfg["models"]["org"]["path"] = str(base)
    (tmp_path / "org-seed1").mkdir()
    with pytest.raises(InputError) as err:
        check_workflow_config(cfg)
    msg = str(err.value)
    assert f"{base}-seed2" in msg and "provenance.json" in msg and "all_seeds: false" in msg, msg


def test_the_toy_settings_train_one_organism_per_seed():
    toy = ToySettings.from_config({})
    assert DEFAULT_MODELS["organism-ioi"]["seeds"] == [0, 1, 2]
    seeds = {
        n: toy.models[n].train.seed for n in ("organism-ioi", "organism-ioi-seed1", "organism-ioi-seed2")
    }
    assert seeds == {"organism-ioi": 0, "organism-ioi-seed1": 1, "organism-ioi-seed2": 2}
    assert toy.models["organism-ioi-seed2"].circuit == toy.models["organism-ioi"].circuit
    # a config may shorten every seed at once, or one seed alone
    short = ToySettings.from_config(
        {"models": {"organism-ioi": {"steps": 5}, "organism-ioi-seed2": {"steps": 7}}}
    )
    assert [short.models[f"organism-ioi{s}"].train.steps for s in ("", "-seed1", "-seed2")] == [5, 5, 7]
    assert ToySettings.from_config({"models": {"organism-ioi": {"seeds": [0]}}}).models.keys() >= {
        "organism-ioi"
    }
    assert (
        "organism-ioi-seed1"
        not in ToySettings.from_config({"models": {"organism-ioi": {"seeds": [0]}}}).models
    )


def test_table1_classes_come_from_circuit_json_and_the_classifier_is_scored_against_them(tmp_path):
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps({"kind": "ioi", "heads": {"name_mover": ["6.0", "6.5"], "induction": ["2.4"],
                                                          "backup_name_mover": ["7.1"]}}))  # fmt: skip
    truth = read_classes(path)
    assert set(truth["class"]) == {"name_mover", "induction", "backup_name_mover"}
    found = pd.DataFrame(
        {"class": ["name_mover", "name_mover", "s_inhibition"], "layer": [6, 7, 4], "head": [0, 1, 1]}
    )
    agree = class_agreement(truth, found).set_index("class")
    assert agree.loc["NM", "truth"] == "6.0, 6.5" and agree.loc["NM", "classifier"] == "6.0, 7.1"
    assert (
        agree.loc["NM", "both"] == 1
        and agree.loc["NM", "precision"] == 0.5
        and agree.loc["NM", "recall"] == 0.5
    )
    assert agree.loc["Induction", "recall"] == 0 and pd.isna(agree.loc["Induction", "precision"])
    assert pd.isna(agree.loc["SI", "recall"]) and agree.loc["SI", "precision"] == 0
