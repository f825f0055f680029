"""The shipped model organisms (models/organisms/).

organism-ioi: it loads, is the file set that provenance.json describes, contains the circuit it
was trained to implement (the classifier with its default thresholds, and mean ablation on
held-out prompts), and its shipped ablation.json is what the weights score now.

organism-facts: it loads, is the file set provenance.json describes, meets its held-out goals,
and contains subject enrichment: under Gaussian noise on the subject, restoring the MLP output at
the last subject token (windows 1 and 5, the project's engine) peaks at a middle layer and
restores at least a fifth of the clean-minus-corrupted answer probability there.

Short training runs of the imposing objectives make their losses fall and are deterministic given
the seed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from patchbench.analysis.ioi_classes import CLASSES, classifier_inputs, classify_heads
from patchbench.corruption import NoiseSpec
from patchbench.engine.sweep import run_sweep
from patchbench.filtering import filter_correct
from patchbench.metrics import baselines, effects
from patchbench.sites import SweepSpec
from patchbench.tasks import build_task
from patchbench.toy.ablation import ablation_report, heldout_ioi_prompts, organism_check
from patchbench.toy.circuit import read_circuit
from patchbench.toy.corpus import (
    CorpusSpec,
    HeldOut,
    ToyVocab,
    generate_corpus,
    vocabulary_texts,
)
from patchbench.toy.evaluate import GOALS
from patchbench.toy.impose import make_objective
from patchbench.toy.model import load_toy
from patchbench.toy.provenance import PROVENANCE
from patchbench.toy.settings import ToySettings, TrainSpec, model_settings
from patchbench.toy.tokenizer import build_tokenizer
from patchbench.toy.train import train_toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def organism_dir(root):
    return root / "models" / "organisms" / "organism-ioi"


@pytest.fixture(scope="module")
def toy(root):
    return ToySettings.from_config({"data_dir": str(root / "data" / "toy")})


@pytest.fixture(scope="module")
def ioi_model(organism_dir):
    return load_toy(organism_dir)


@pytest.fixture(scope="module")
def prompts(ioi_model, organism_dir, toy):
    held = HeldOut.from_json((organism_dir / "heldout.json").read_text())
    return heldout_ioi_prompts(ioi_model.tokenizer, toy.data_dir, held.ioi_pairs, 200, 0)


@pytest.fixture(scope="module")
def found(ioi_model, prompts):
    classes = classify_heads(classifier_inputs(ioi_model, prompts))  # default thresholds
    return {
        c: {(int(la), int(h)) for la, h in g[["layer", "head"]].to_numpy()}
        for c, g in classes.groupby("class")
    }


def test_the_circuit_ships_beside_the_weights(organism_dir):
    """(provenance, held-out split and accuracies of every shipped model: test_shipped_models.py)"""
    record = json.loads((organism_dir / PROVENANCE).read_text())
    assert {"circuit.json", "ablation.json"} <= set(record["sha256"])
    assert re.match(r"snakemake .*train_organisms", record["command"])


def test_the_organism_has_the_issue_13_shape(ioi_model, organism_dir):
    assert ioi_model.shape.n_layers >= 4 and ioi_model.shape.n_heads >= 4
    circuit = read_circuit(organism_dir)
    assert circuit is not None and circuit.kind == "ioi"


def test_the_classifier_finds_every_ioi_class_in_the_ioi_organism(found, organism_dir):
    assert set(CLASSES) <= set(found), (
        found
    )  # name movers, negative name movers, S-inhibition, dup, induction
    assert found["name_mover"] and found["negative_name_mover"] and found["s_inhibition"]
    # every head imposed for one of the classifier's classes is detected in it (circuit.json: ground truth)
    circuit = read_circuit(organism_dir)
    for cls_name in CLASSES:
        assert set(circuit.head(cls_name)) <= found[cls_name], (
            cls_name,
            circuit.head(cls_name),
            found[cls_name],
        )


def test_ablating_the_classified_circuit_breaks_ioi_and_as_many_other_heads_do_not(ioi_model, prompts, found):
    circuit = sorted(set().union(*found.values()))
    report = ablation_report(ioi_model, prompts, circuit, n_draws=5, seed=0)
    assert report["n_prompts"] == 200
    assert report["clean"]["top1"] >= GOALS["ioi"], report["clean"]
    assert report["circuit"]["top1"] <= 0.2, report["circuit"]  # IO is no longer the prediction
    assert report["circuit"]["io_vs_s"] <= 0.75, report["circuit"]  # IO vs S: towards chance (0.5)
    assert all(len(d["heads"]) == len(circuit) for d in report["outside_draws"])
    assert not any(set(d["heads"]) & set(report["circuit"]["heads"]) for d in report["outside_draws"])
    assert report["outside_min_top1"] >= 0.8, report["outside_draws"]


def test_shipped_ablation_json_is_what_the_weights_score_now(ioi_model, organism_dir, toy):
    held = HeldOut.from_json((organism_dir / "heldout.json").read_text())
    shipped = json.loads((organism_dir / "ablation.json").read_text())
    now = organism_check(ioi_model, organism_dir, toy.data_dir, held, toy.eval_n_prompts, toy.eval_seed)
    assert now["classes"] == shipped["classes"]
    for part in ("classified", "imposed"):
        assert now[part]["clean"] == pytest.approx(shipped[part]["clean"], abs=1e-9)
        assert now[part]["circuit"]["heads"] == shipped[part]["circuit"]["heads"]
        for score in ("top1", "io_vs_s"):
            assert now[part]["circuit"][score] == pytest.approx(shipped[part]["circuit"][score], abs=1e-9)
        assert now[part]["outside_min_top1"] == pytest.approx(shipped[part]["outside_min_top1"], abs=1e-9)


def _tiny(vocab, n_docs: int, d_model: int, units: int):
    docs, held = generate_corpus(vocab, CorpusSpec(n_docs=n_docs, seed=0, mix={"ioi": 1.0}))
    tok = build_tokenizer(docs, vocabulary_texts(vocab))
    st = model_settings("tiny", {
        "n_layers": 4, "d_model": d_model, "n_heads": 4, "attn_only": True, "n_ctx": 64,
        "circuit": {"kind": "ioi", "heads": {"previous_token": ["0.0"], "duplicate_token": ["0.1"],
                    "induction": ["1.0"], "s_inhibition": ["2.0"], "name_mover": ["3.0"],
                    "negative_name_mover": ["3.1"]}},
        "impose": {"units": units},
    })  # fmt: skip
    return docs, held, tok, st


def test_short_organism_training_makes_its_losses_fall(root, tmp_path):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, held, tok, st = _tiny(vocab, 600, 32, 4)
    spec = TrainSpec(steps=40, batch_size=8, lr=1e-2, warmup=5)

    def objective(n_layers: int, n_heads: int):
        return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, 0)

    summary = train_toy(docs, tok, st.model, spec, tmp_path, "tiny", objective_factory=objective)
    curve = np.genfromtxt(tmp_path / "training_curve.csv", delimiter=",", names=True)
    assert curve.shape == (40,)
    assert set(summary["final_terms"]) == {"task", "interchange", "strict", "attention", "sign"}
    assert summary["final_loss"] < summary["first_loss"] - 1.0
    for term in ("task", "interchange", "attention"):
        assert curve[term][-10:].mean() < curve[term][:5].mean() - 0.5, (term, curve[term])


TINY_FACTS = {
    "n_layers": 4, "d_model": 16, "n_heads": 2, "d_mlp": 32, "n_ctx": 64,
    "circuit": {"kind": "factual", "mlps": {"subject_enrichment": [1, 2], "outside": [0, 3]}},
    "impose": {"units": 2, "bos_p": 0.5},
}  # fmt: skip


@pytest.mark.parametrize("kind", ["ioi", "factual"])
def test_organism_training_is_deterministic_given_its_seed(root, tmp_path, kind):
    """Same seed -> bitwise-identical weights with the imposing terms on (their rows are seeded too)."""
    from safetensors.torch import load_file

    vocab = ToyVocab.load(root / "data" / "toy")
    if kind == "ioi":
        docs, held, tok, st = _tiny(vocab, 300, 16, 2)
    else:
        docs, held = generate_corpus(vocab, CorpusSpec(n_docs=200, seed=0, mix={"factual": 1.0}))
        tok = build_tokenizer(docs, vocabulary_texts(vocab))
        st = model_settings("tiny-facts", TINY_FACTS)
    states = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        spec = TrainSpec(steps=4 if kind == "ioi" else 3, batch_size=4, seed=seed)

        def objective(n_layers: int, n_heads: int, seed: int = seed):
            return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, seed)

        train_toy(docs, tok, st.model, spec, tmp_path / run, run, objective_factory=objective)
        states.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_a_circuit_must_fit_the_model_and_give_each_head_one_class():
    with pytest.raises(ValueError, match="outside"):
        model_settings("x", {"n_layers": 2, "n_heads": 2, "d_model": 16,
                             "circuit": {"kind": "ioi", "heads": {"name_mover": ["3.0"]}}})  # fmt: skip
    with pytest.raises(ValueError, match="two classes"):
        model_settings("x", {"n_layers": 2, "n_heads": 2, "d_model": 16,
                             "circuit": {"kind": "ioi", "heads": {"name_mover": ["1.0"], "s_inhibition": ["1.0"]}}})  # fmt: skip
    with pytest.raises(ValueError, match="kind"):
        model_settings("x", {"n_layers": 2, "n_heads": 2, "d_model": 16, "circuit": {"kind": "poetry"}})
    with pytest.raises(ValueError, match="MLP roles"):
        model_settings("x", {"n_layers": 2, "n_heads": 2, "d_model": 16,
                             "circuit": {"kind": "ioi", "mlps": {"subject_enrichment": [1]}}})  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        model_settings("x", {"n_layers": 2, "n_heads": 2, "d_model": 16,
                             "circuit": {"kind": "factual", "mlps": {"subject_enrichment": [3]}}})  # fmt: skip


# ----------------------------------------------------------------------------- organism-facts
FACTS_GOAL = {"fraction": 0.2, "windows": (1, 5)}  # issue #13 item 2 (never lowered)


@pytest.fixture(scope="module")
def facts_dir(root):
    return root / "models" / "organisms" / "organism-facts"


@pytest.fixture(scope="module")
def facts_model(facts_dir):
    return load_toy(facts_dir)


def restoration_by_layer(model, prompts, corruption: str, window: int) -> np.ndarray:
    """Per layer: the engine's prob effect of the MLP output at subject_last (window ``window``)
    over the clean-minus-corrupted answer probability (1 = fully restored)."""
    spec = SweepSpec(corruption=corruption, site="mlp", position="subject_last", window=window,
                     noise=NoiseSpec(nu=3.0, n_samples=1, seed=0), memory_budget_mb=1024)  # fmt: skip
    raw = run_sweep(model, prompts, spec, name="organism-facts", progress=False)
    eff = effects(raw, ("prob",), task="factual", corruption=corruption).sort_values("layer")
    base = baselines(raw)
    return eff["effect"].to_numpy() / (base["clean_prob_ans"] - base["corrupted_prob_ans"])


def test_organism_facts_has_the_issue_13_shape(facts_model, facts_dir):
    assert (
        facts_model.shape.n_layers >= 8
        and not json.loads((facts_dir / "config.json").read_text())["attn_only"]
    )
    circuit = read_circuit(facts_dir)
    assert circuit is not None and circuit.kind == "factual"
    assert json.loads((facts_dir / PROVENANCE).read_text())["circuit"] == circuit.to_dict()
    n = facts_model.shape.n_layers
    assert all(n // 4 <= la < n - n // 4 for la in circuit.mlps["subject_enrichment"])


@pytest.fixture(scope="module")
def facts_prompts(facts_model, toy):
    prompts = build_task("factual", facts_model.tokenizer, toy.data_dir, n_prompts=60, seed=0)
    kept, stats = filter_correct(facts_model, prompts)
    assert stats["accuracy"] >= GOALS["factual"], stats  # the demo's own prompts (held-out paraphrases)
    return kept


@pytest.mark.parametrize("window", FACTS_GOAL["windows"])
def test_organism_facts_gn_subject_last_mlp_restoration_peaks_mid_model(facts_model, facts_prompts, window):
    """Subject enrichment: GN on the subject, restoring MLP(s) at the last subject token peaks at
    a layer outside the first and last quarter and restores >= 20% of P_clean - P_corrupted."""
    frac = restoration_by_layer(facts_model, facts_prompts, "gn", window)
    n = len(frac)
    peak = int(np.argmax(frac))
    assert n // 4 <= peak < n - n // 4, (peak, np.round(frac, 3))
    assert frac[peak] >= FACTS_GOAL["fraction"], (peak, np.round(frac, 3))


def test_short_factual_organism_training_makes_its_losses_fall(root, tmp_path):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, held = generate_corpus(vocab, CorpusSpec(n_docs=400, seed=0, mix={"factual": 1.0}))
    tok = build_tokenizer(docs, vocabulary_texts(vocab))
    st = model_settings("tiny-facts", {
        "n_layers": 4, "d_model": 32, "n_heads": 2, "d_mlp": 64, "n_ctx": 64,
        "circuit": {"kind": "factual", "heads": {"subject_composition": ["0.0"]},
                    "mlps": {"subject_enrichment": [1, 2], "outside": [0, 3]}},
        "impose": {"units": 4, "bos_p": 0.5},
    })  # fmt: skip

    def objective(n_layers: int, n_heads: int):
        return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, 0)

    spec = TrainSpec(steps=30, batch_size=8, lr=1e-2, warmup=5)
    summary = train_toy(docs, tok, st.model, spec, tmp_path, "tiny-facts", objective_factory=objective)
    curve = np.genfromtxt(tmp_path / "training_curve.csv", delimiter=",", names=True)
    assert set(summary["final_terms"]) == {"task", "interchange", "strict", "attention"}
    assert summary["final_loss"] < summary["first_loss"] - 1.0
    for term in ("task", "interchange", "strict"):
        assert curve[term][-10:].mean() < curve[term][:5].mean() - 0.5, (term, curve[term])
