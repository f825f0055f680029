"""The shipped model organisms (models/organisms/).

organism-ioi: its shipped ablation.json (the classifier's classes and the mean-ablation check) is
what the weights score now; its independent checks, every seed: tests/test_organism_ioi.py.

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

from patchbench.corruption import NoiseSpec
from patchbench.engine.sweep import run_sweep
from patchbench.filtering import filter_correct
from patchbench.metrics import baselines, effects
from patchbench.sites import SweepSpec
from patchbench.tasks import build_task
from patchbench.toy.ablation import organism_check
from patchbench.toy.circuit import read_circuit
from patchbench.toy.corpus import (
    CorpusSpec,
    HeldOut,
    ToyVocab,
    generate_corpus,
    ioi_other_endings,
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


def test_shipped_ablation_json_is_what_the_weights_score_now(organism_dir, toy):
    """(the IOI organism's independent checks, per seed: tests/test_organism_ioi.py)"""
    held = HeldOut.from_json((organism_dir / "heldout.json").read_text())
    shipped = json.loads((organism_dir / "ablation.json").read_text())
    now = organism_check(
        load_toy(organism_dir), organism_dir, toy.data_dir, held, toy.eval_n_prompts, toy.eval_seed
    )
    assert now["classes"] == shipped["classes"]
    for part in ("classified", "imposed"):
        assert now[part]["clean"] == pytest.approx(shipped[part]["clean"], abs=1e-9)
        assert now[part]["circuit"]["heads"] == shipped[part]["circuit"]["heads"]
        for score in ("top1", "io_vs_s"):
            assert now[part]["circuit"][score] == pytest.approx(shipped[part]["circuit"][score], abs=1e-9)
        assert now[part]["outside_min_top1"] == pytest.approx(shipped[part]["outside_min_top1"], abs=1e-9)


def _tiny(vocab, n_docs: int, d_model: int, units: int, answer_p: float = 0.5):
    """A 5 x 4 attention-only IOI organism with every class (backups, two duplicate-detection
    paths, unconstrained heads) and an uncertain IOI continuation."""
    spec = CorpusSpec(n_docs=n_docs, seed=0, mix={"ioi": 1.0}, ioi_answer_p=answer_p, ioi_third_name=0.2)
    docs, held = generate_corpus(vocab, spec)
    tok = build_tokenizer(docs, vocabulary_texts(vocab))
    st = model_settings("tiny", {
        "n_layers": 5, "d_model": d_model, "n_heads": 4, "attn_only": True, "n_ctx": 64, "ioi_answer_p": answer_p, "ioi_third_name": 0.2,
        "circuit": {"kind": "ioi", "heads": {"previous_token": ["0.0"], "duplicate_token": ["0.1"],
                    "induction": ["1.0"], "s_inhibition": ["2.0"], "name_mover": ["3.0"],
                    "negative_name_mover": ["4.1"], "backup_name_mover": ["4.0"]},
                    "unconstrained": ["1.3", "2.3"]},
        "impose": {"units": units, "attention_target": 0.8},
    })  # fmt: skip
    return docs, held, tok, st


def test_the_corpus_makes_the_ioi_continuation_uncertain(root):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, _ = generate_corpus(vocab, CorpusSpec(n_docs=400, seed=0, mix={"ioi": 1.0}, ioi_answer_p=0.5))
    ends_other = re.compile(" (" + "|".join(map(re.escape, ioi_other_endings(vocab))) + ")[.,]")
    other = sum(bool(ends_other.search(d)) for d in docs) / len(docs)
    assert 0.4 < other < 0.6, other
    plain, _ = generate_corpus(vocab, CorpusSpec(n_docs=400, seed=0, mix={"ioi": 1.0}))
    assert not any(ends_other.search(d) for d in plain)


def test_short_organism_training_makes_its_losses_fall(root, tmp_path):
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, held, tok, st = _tiny(vocab, 600, 32, 4)
    spec = TrainSpec(steps=40, batch_size=8, lr=1e-2, warmup=5)

    def objective(n_layers: int, n_heads: int):
        return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, 0, st.corpus)

    summary = train_toy(docs, tok, st.model, spec, tmp_path, "tiny", objective_factory=objective)
    curve = np.genfromtxt(tmp_path / "training_curve.csv", delimiter=",", names=True)
    assert curve.shape == (40,)
    assert set(summary["final_terms"]) == {
        "task", "interchange", "redundancy", "indirect", "strict", "backup", "attention", "sign"
    }  # fmt: skip
    assert summary["final_loss"] < summary["first_loss"] - 1.0
    for term in ("task", "interchange", "redundancy", "backup", "attention"):
        assert curve[term][-10:].mean() < curve[term][:5].mean() - 0.5, (term, curve[term])


def test_the_ioi_objective_patches_what_its_docstring_says(root):
    """Rows: clean / swapped / resampled, then one copy of the clean rows per group; the strict
    group never touches circuit or unconstrained heads; ablated groups use the clean mean."""
    vocab = ToyVocab.load(root / "data" / "toy")
    docs, held, tok, st = _tiny(vocab, 300, 16, 3)
    obj = make_objective(st.circuit, vocab, held, tok, st.impose, 5, 4, 0, st.corpus)
    assert obj.groups == ["si", "no_dup", "no_ind", "ind_only", "dup_only", "strict", "nm_ablated"]
    assert not set(obj.strict_heads) & (set(st.circuit.circuit_heads()) | set(st.circuit.unconstrained))
    x, pos = obj.rows.batch(3)
    n = 3
    assert obj.base == 6 and x.shape[0] == 6 * n  # clean, swapped, 3 resampled, third-name
    clean, third = x[:n], x[5 * n :]
    rows = torch.arange(n)
    assert torch.equal(third[rows, pos["S1"][:n]], clean[rows, pos["S2"][:n]])  # S1 is still the clean S
    assert not bool(
        (third[rows, pos["S2"][5 * n :]] == clean[rows, pos["S2"][:n]]).any()
    )  # S2 is a third name
    plan = obj._patch_plan(3, pos)
    by_group = {}
    for layer, entries in plan.items():
        for dst, src, h, qd, _qs in entries:
            g = obj.groups[(int(dst[0]) - obj.base * n) // n]
            by_group.setdefault(g, []).append(
                ((layer, h), None if src is None else int(src[0]) // n, qd is None)
            )
    assert by_group["si"] == [((2, 0), 1, True)]  # from the swapped rows, every position
    # mean-ablated heads (source None) at every position; interchanged duplicate paths at S2 only
    assert by_group["no_dup"] == [((0, 1), None, True)] and by_group["no_ind"] == [((1, 0), None, True)]
    assert sorted(by_group["ind_only"]) == [((0, 1), None, True), ((1, 0), 1, False)]
    assert sorted(by_group["dup_only"]) == [((0, 1), 1, False), ((1, 0), None, True)]
    assert by_group["nm_ablated"] == [((3, 0), None, True)]
    assert all(src == 2 and every for _, src, every in by_group["strict"])  # from the resampled rows
    # every head but the movers (name movers, backups, negative name movers) is bounded in direct effect
    assert set(obj.indirect) == {(la, h) for la in range(5) for h in range(4)} - {(3, 0), (4, 0), (4, 1)}
    # the soft target: answer_p on the answer, the rest spread over the other endings
    logp = torch.full((1, tok.get_vocab_size()), -5.0)
    loss = obj.rows.nll(logp, torch.tensor([0]))
    assert float(loss) == pytest.approx(5.0) and len(obj.rows.other_ids) == len(ioi_other_endings(vocab))
    logp[0, 0] = -1.0  # a third-name row: A, B and the endings evenly
    third_loss = obj.rows.nll_third(logp, torch.tensor([0]), torch.tensor([1]))
    assert float(third_loss) == pytest.approx(
        (1 + 5 * (1 + len(obj.rows.other_ids))) / (2 + len(obj.rows.other_ids))
    )


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
            return make_objective(st.circuit, vocab, held, tok, st.impose, n_layers, n_heads, seed, st.corpus)

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
