"""The factual, greater-than, arithmetic and docstring organisms and their independent checks.

Each shipped organism of these kinds: its circuit.json is valid for its weights and its kind; its
check (``patchbench.toy.checks_<kind>``, plain forward hooks, not the patching engine) scores
the weights as the shipped ablation.json says, and every stated property holds; the check fails
an organism scored against a circuit it was not trained to have. The objectives train
deterministically given the seed; the factual calibration and the seed expansion do what they say.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import ROOT
from patchbench.config import seed_name
from patchbench.toy.circuit import KINDS, Circuit, read_circuit
from patchbench.toy.corpus import CorpusSpec, ToyVocab, generate_corpus, vocabulary_texts
from patchbench.toy.impose import make_objective
from patchbench.toy.model import load_toy
from patchbench.toy.objectives.factual import vote_beta
from patchbench.toy.provenance import PROVENANCE
from patchbench.toy.settings import DEFAULT_MODELS, ToySettings, TrainSpec, model_settings
from patchbench.toy.tokenizer import build_tokenizer
from patchbench.toy.train import train_toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OTHER_KINDS = ("factual", "greater_than", "arithmetic", "docstring")  # IOI: tests/test_organism_ioi.py
SHIPPED = sorted(
    p.parent.name
    for p in (ROOT / "models" / "organisms").glob("*/circuit.json")
    if json.loads(p.read_text())["kind"] in OTHER_KINDS
)


#: What the shipped weights are measured to miss (tests/conftest.py: strict expected failures).
MEASURED_MISSES = {
    "test_every_stated_property_holds_on_the_shipped_weights[organism-greater-than]": (
        "circuit_ablation 0.80 > 0.25: mean-ablating the year movers 2.1, 3.0, 3.3 and the comparison "
        "MLPs 4-5 at the last token leaves 80 % of the logit difference (ablation.json)"
    ),
}


@pytest.fixture(scope="module")
def data_dir(root):
    return root / "data" / "toy"


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_circuit_json_fits_its_weights_and_its_provenance(root, name):
    model_dir = root / "models" / "organisms" / name
    circuit = read_circuit(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    circuit.check_shape(cfg["n_layers"], cfg["n_heads"])
    assert set(circuit.heads) <= set(KINDS[circuit.kind].heads)
    assert set(circuit.mlps) <= set(KINDS[circuit.kind].mlps)
    assert json.loads((model_dir / PROVENANCE).read_text())["circuit"] == circuit.to_dict()
    assert circuit.circuit_heads(), "an organism's circuit names its heads"


@pytest.fixture(scope="module", params=SHIPPED)
def checked(request, root, data_dir):
    model_dir = root / "models" / "organisms" / request.param
    circuit = read_circuit(model_dir)
    check = importlib.import_module(f"patchbench.toy.checks_{circuit.kind}").check
    model = load_toy(model_dir)
    return model_dir, model, circuit, check, check(model, circuit, data_dir)


def test_the_independent_check_scores_the_shipped_weights_as_recorded(checked):
    model_dir, _, _, _, now = checked
    shipped = json.loads((model_dir / "ablation.json").read_text())
    for key in ("clean_p", "gn_ratio", "circuit_ablation"):
        assert now[key] == pytest.approx(shipped[key], abs=1e-6), key
    assert now["failures"] == shipped["failures"]


def test_every_stated_property_holds_on_the_shipped_weights(checked):
    model_dir, _, circuit, _, now = checked
    assert now["failures"] == [], (model_dir.name, now["failures"])
    assert 0 < now["clean_p"] <= 1 and now["circuit_ablation"] < 1
    bounds = importlib.import_module(f"patchbench.toy.checks_{circuit.kind}").BOUNDS
    assert set(now["properties"]) == set(bounds)  # every stated property is measured


def test_the_check_fails_an_organism_against_a_circuit_it_was_not_trained_to_have(checked, data_dir):
    """Move every head of the circuit to another head of the same layer (and every MLP role to the
    layers of another role): the properties must no longer hold."""
    _, model, circuit, check, _ = checked
    n_heads = model.shape.n_heads
    inside = set(circuit.circuit_heads())
    free = {la: [h for h in range(n_heads) if (la, h) not in inside] for la in range(model.shape.n_layers)}
    moved = {}
    for cls, heads in circuit.heads.items():
        moved[cls] = [f"{la}.{free[la].pop(0)}" for la, _ in heads]
    roles = list(circuit.mlps)
    mlps = {r: list(circuit.mlps[roles[(i + 1) % len(roles)]]) for i, r in enumerate(roles)} if roles else {}
    wrong = Circuit.from_config({"kind": circuit.kind, "heads": moved, "mlps": mlps})
    assert check(model, wrong, data_dir)["failures"]


def test_the_factual_vote_gives_the_answer_its_probability():
    for p, k in ((0.5, 8), (0.3, 8), (0.7, 5)):
        target = (vote_beta(p, k) * torch.eye(k)[0]).softmax(-1)
        assert float(target[0]) == pytest.approx(p) and float(target[1]) == pytest.approx((1 - p) / (k - 1))
    with pytest.raises(ValueError):
        vote_beta(1.0, 8)


def test_a_factual_corpus_states_facts_as_reliably_as_asked(data_dir):
    vocab = ToyVocab.load(data_dir)
    truth = {(f["subject"], f["relation_id"]): f["attribute"] for f in vocab.facts}
    plain = CorpusSpec(n_docs=3000, seed=0, mix={"factual": 1.0})
    docs, _ = generate_corpus(vocab, plain)
    assert (
        docs == generate_corpus(vocab, replace(plain, fact_reliability=1.0))[0]
    )  # the default changes nothing
    noisy, _ = generate_corpus(vocab, replace(plain, fact_reliability=0.5))
    templates = ToyVocab.load(data_dir).material["relation_templates"]

    def share_true(corpus: list[str]) -> float:
        hits = []
        for doc in corpus:
            for (subject, rel), attr in truth.items():
                for t in templates[rel]:
                    stem = t.format(subject)
                    if stem in doc:
                        hits.append(doc.split(stem, 1)[1].strip(" .").split(".")[0] == attr)
        return float(np.mean(hits))

    assert share_true(docs) == 1.0
    assert 0.4 <= share_true(noisy) <= 0.6


def test_a_factual_organism_is_expanded_into_its_seeds():
    toy = ToySettings.from_config({})
    seeds = DEFAULT_MODELS["organism-facts"]["seeds"]
    assert len(seeds) >= 3
    for s in seeds:
        st = toy.models[seed_name("organism-facts", s)]
        assert st.train.seed == s and st.circuit == toy.models["organism-facts"].circuit
        assert st.corpus == toy.models["organism-facts"].corpus  # one held-out split, one corpus
    assert seed_name("organism-facts", 0) == "organism-facts"
    assert seed_name("organism-facts", 2) == "organism-facts-seed2"


TINY = {
    "factual": {"n_layers": 4, "d_model": 16, "n_heads": 2, "d_mlp": 32, "mix": {"factual": 1.0},
                "circuit": {"kind": "factual", "heads": {"subject_composition": ["0.0"], "attribute_extraction": ["3.1"]},
                            "mlps": {"subject_enrichment": [1, 2], "outside": [0, 3]}}},
    "greater_than": {"n_layers": 4, "d_model": 16, "n_heads": 2, "d_mlp": 32, "mix": {"greater_than": 1.0},
                     "circuit": {"kind": "greater_than", "heads": {"year_mover": ["1.0"]},
                                 "mlps": {"comparison": [2, 3], "outside": [0, 1]}}},
    "arithmetic": {"n_layers": 4, "d_model": 16, "n_heads": 2, "d_mlp": 32, "mix": {"arithmetic": 1.0},
                   "circuit": {"kind": "arithmetic", "heads": {"x_mover": ["1.0"], "y_mover": ["1.1"]},
                               "mlps": {"result": [2, 3], "outside": [0, 1]}}},
    "docstring": {"n_layers": 4, "d_model": 16, "n_heads": 2, "attn_only": True, "mix": {"docstring": 1.0},
                  "circuit": {"kind": "docstring", "heads": {"previous_token": ["0.0"], "previous_argument": ["0.1"],
                                                            "last_param": ["1.0"], "argument_mover": ["3.0"]}}},
}  # fmt: skip


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_each_objective_trains_deterministically_given_its_seed(root, tmp_path, kind):
    """Same seed -> bitwise-identical weights with the imposing terms on; another seed differs;
    every term is finite and named."""
    from safetensors.torch import load_file

    vocab = ToyVocab.load(root / "data" / "toy")
    st = model_settings(
        f"tiny-{kind}", {**TINY[kind], "n_ctx": 64, "n_docs": 150, "impose": {"units": 2, "bos_p": 0.5}}
    )
    docs, held = generate_corpus(vocab, st.corpus)
    tok = build_tokenizer(docs, vocabulary_texts(vocab))
    states = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):

        def objective(n_layers: int, n_heads: int, seed: int = seed):
            return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, seed)

        summary = train_toy(docs, tok, st.model, TrainSpec(steps=3, batch_size=4, seed=seed), tmp_path / run, run,
                            objective_factory=objective)  # fmt: skip
        assert set(summary["final_terms"]) == {"task", "interchange", "strict", "attention"}
        assert all(np.isfinite(v) for v in summary["final_terms"].values())
        states.append(load_file(str(tmp_path / run / "model.safetensors")))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_the_robustness_report_knows_the_tasks_of_every_circuit_kind():
    from patchbench.analysis.robustness import CIRCUIT_TASKS
    from patchbench.tasks import TASKS

    assert set(CIRCUIT_TASKS) == set(KINDS)
    assert all(t in TASKS for tasks in CIRCUIT_TASKS.values() for t in tasks)


def test_the_organisms_keep_to_their_weight_budget(root):
    """organism-facts with its seeds at most 20 MB; greater-than, arithmetic and docstring together 16 MB."""

    def size(pattern: str) -> int:
        return sum(
            f.stat().st_size for d in (root / "models" / "organisms").glob(pattern) for f in d.rglob("*")
        )

    assert size("organism-facts*") <= 20 * 10**6
    others = sum(size(f"organism-{k}") for k in ("greater-than", "arithmetic", "docstring"))
    assert others <= 16 * 10**6
