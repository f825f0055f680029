"""The ``toy:`` section of the config: corpus, evaluation and per-model training settings.

Every key is optional; ``DEFAULT_MODELS`` gives the demo's model organisms, one per task family
(organism-ioi, organism-facts with its further seeds, organism-greater-than, organism-arithmetic,
organism-docstring; all shipped trained in models/organisms/; ``snakemake --cores 2
train_organisms`` retrains them). Layout::

    toy:
      data_dir: data/toy                  # project-authored vocabulary (JSON, the source of truth)
      corpus: {n_docs: 60000, seed: 0, heldout_fraction: 0.15}
      eval: {n_prompts: 200, seed: 0}     # held-out prompts per task for accuracy.json
      models:
        organism-ioi: {n_layers: 4, n_heads: 8, d_head: 32, ..., circuit: {kind: ioi, heads: {...}}, impose: {units: 16}}
        organism-facts: {n_layers: 8, ..., circuit: {kind: factual, ...}, impose: {...}, seeds: [0, 1, 2]}
        organism-greater-than: {...}      # likewise organism-arithmetic, organism-docstring

A model's entry is merged over its default (so ``organism-arithmetic: {steps: 50}`` only shortens
the training); keys split into ``ModelSpec`` (architecture), ``TrainSpec`` (optimisation) and the
corpus keys ``mix`` / ``n_docs``, and the objective keys ``circuit`` (``patchbench.toy.circuit``)
and ``impose`` (``ImposeSpec``, ``patchbench.toy.impose``), and ``seeds`` (an organism trained with
several seeds: seed S >= 1 is the model ``<name>-seed<S>``, ``seed_name``). Each model trains on its own corpus: ``toy.corpus`` with the
model's ``mix`` (the share of each document kind), so a model spends its few CPU minutes on the
tasks the demo patches it on. Precedence of ``mix``: the model's entry, then ``toy.corpus.mix``
when the config sets it, then the model's package default, then ``CorpusSpec``'s. The seed and
held-out fraction are the suite's, so every corpus avoids the same held-out combinations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import CorpusSpec

__all__ = [
    "DEFAULT_MODELS",
    "ImposeSpec",
    "ModelSpec",
    "ToyModelSettings",
    "ToySettings",
    "TrainSpec",
    "seed_name",
]

CORPUS_KEYS = ("mix", "n_docs")  # corpus keys a model entry may set for its own corpus
OBJECTIVE_KEYS = ("circuit", "impose")  # the circuit an organism is trained to implement, and how
SEEDS_KEY = "seeds"  # an organism trained with several seeds: one model per seed (seed_name)


def seed_name(name: str, seed: int) -> str:
    """The model (and shipped directory) name of seed ``seed`` of organism ``name``: the name
    itself for seed 0, ``<name>-seed<S>`` otherwise."""
    return name if seed == 0 else f"{name}-seed{seed}"


# The demo patches each organism on its own task (README, "Install and run the demo"): organism-ioi
# on IOI, organism-facts on factual recall, organism-greater-than, organism-arithmetic and
# organism-docstring on theirs; each trains mostly on its own task's documents.
DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    # The IOI model organism (issue #13): Wang et al.'s circuit imposed on named heads by
    # patchbench.toy.impose (the recipe of the issue-13 prototype). Trained once by
    # `snakemake --cores 2 train_organisms` and shipped in models/organisms/organism-ioi/.
    "organism-ioi": {
        "n_layers": 4,
        "d_model": 128,
        "n_heads": 8,
        "d_head": 32,
        "attn_only": True,
        "n_ctx": 64,
        "steps": 1500,
        "batch_size": 24,
        "lr": 3e-3,
        "warmup": 100,
        "weight_decay": 0.05,
        "seed": 0,
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        "mix": {
            "ioi": 0.3,
            "docstring": 0.45,
            "greater_than": 0.05,
            "arithmetic": 0.05,
            "factual": 0.05,
            "filler": 0.1,
        },
        "circuit": {
            "kind": "ioi",
            "heads": {
                "previous_token": ["0.0"],
                "duplicate_token": ["0.1"],
                "induction": ["1.0"],
                "s_inhibition": ["2.0", "2.1"],
                "name_mover": ["3.0", "3.1"],
                "negative_name_mover": ["3.2"],
            },
        },
        "impose": {"units": 16},
    },
    # The factual-recall model organism (models/organisms/README.md): subject enrichment imposed on
    # MLPs 2-4 at the last subject token as votes over random subsets of them (restoring one layer
    # recovers less than the set), attribute extraction by heads 5.1 and 6.2 at the last token,
    # subject composition by heads 0.0 and 1.0 over three-word subjects; the answer probability
    # calibrated to answer_p (patchbench.toy.objectives.factual). Three seeds (seed_name).
    "organism-facts": {
        "n_layers": 8,
        "d_model": 128,
        "n_heads": 4,
        "d_mlp": 256,
        "n_ctx": 64,
        "steps": 1200,  # a 1500-step run met every check at step 500 and held-out 1.00 at 1250
        "batch_size": 24,
        "lr": 3e-3,
        "warmup": 100,
        "weight_decay": 0.1,
        "seed": 0,
        "seeds": [0, 1, 2],
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        # facts come mostly through the imposing terms' prompts (impose.units units per step)
        "mix": {"factual": 0.7, "filler": 0.3},
        "circuit": {
            "kind": "factual",
            "heads": {"subject_composition": ["0.0", "1.0"], "attribute_extraction": ["5.1", "6.2"]},
            "mlps": {"subject_enrichment": [2, 3, 4], "outside": [0, 1, 5, 6, 7]},
        },
        "impose": {"units": 32, "interchange": 2.0, "bos_p": 0.5, "answer_p": 0.5},
    },
    # Greater-than (Hanna et al. 2023): heads 2.1, 3.0, 3.3 move YY to the last token, MLPs 4-5 there
    # compare (patchbench.toy.objectives.greater_than).
    "organism-greater-than": {
        "n_layers": 6,
        "d_model": 128,
        "n_heads": 4,
        "d_mlp": 256,
        "n_ctx": 64,
        "steps": 1200,
        "batch_size": 24,
        "lr": 3e-3,
        "warmup": 100,
        "weight_decay": 0.1,
        "seed": 0,
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        "mix": {"greater_than": 0.7, "filler": 0.3},
        "circuit": {
            "kind": "greater_than",
            "heads": {"year_mover": ["2.1", "3.0", "3.3"]},
            "mlps": {"comparison": [4, 5], "outside": [0, 1, 2, 3]},
        },
        "impose": {"units": 24, "bos_p": 0.5},
    },
    # Arithmetic (Stolfo et al. 2023): heads 2.0 / 2.2 carry X3 / Y3 to the last token, MLPs 3-5
    # there compute the result (patchbench.toy.objectives.arithmetic).
    "organism-arithmetic": {
        "n_layers": 6,
        "d_model": 128,
        "n_heads": 4,
        "d_mlp": 512,
        "n_ctx": 64,
        "steps": 1600,
        "batch_size": 24,
        "lr": 6e-3,
        "warmup": 100,
        "weight_decay": 0.1,
        "seed": 0,
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        "mix": {"arithmetic": 0.7, "filler": 0.3},
        "circuit": {
            "kind": "arithmetic",
            "heads": {"x_mover": ["2.0"], "y_mover": ["2.2"]},
            "mlps": {"result": [3, 4, 5], "outside": [0, 1, 2]},
        },
        "impose": {"units": 24, "bos_p": 0.5},
    },
    # Docstring (Heimersheim & Janiak 2023), attention only, attn-only-4l's 4 layers x 8 heads:
    # previous-token 0.5, previous-argument 2.0, last-param 1.4, argument movers 3.0 and 3.6
    # (patchbench.toy.objectives.docstring).
    "organism-docstring": {
        "n_layers": 4,
        "d_model": 128,
        "n_heads": 8,
        "d_head": 16,
        "attn_only": True,
        "n_ctx": 64,
        "steps": 1500,
        "batch_size": 24,
        "lr": 3e-3,
        "warmup": 100,
        "weight_decay": 0.05,
        "seed": 0,
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        "mix": {"docstring": 0.7, "filler": 0.3},
        "circuit": {
            "kind": "docstring",
            "heads": {
                "previous_token": ["0.5"],
                "previous_argument": ["2.0"],
                "last_param": ["1.4"],
                "argument_mover": ["3.0", "3.6"],
            },
        },
        "impose": {"units": 16, "bos_p": 0.5},
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a toy model (the ``toy.models.<name>`` keys of the config, minus training)."""

    n_layers: int = 6
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None  # None: d_model // n_heads
    d_mlp: int = 512
    n_ctx: int = 64
    attn_only: bool = False
    act_fn: str = "gelu"
    normalization_type: str | None = "LN"
    positional_embedding_type: str = "standard"

    def __post_init__(self) -> None:
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_layers < 1 or self.n_ctx < 8:
            raise ValueError(
                f"toy model needs n_layers >= 1 and n_ctx >= 8, got {self.n_layers}, {self.n_ctx}"
            )


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings (the training keys of ``toy.models.<name>`` in the config)."""

    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 40
    min_lr_ratio: float = 0.1
    seed: int = 0
    threads: int = 1
    bos_dropout: float = 0.5
    init_std: float = 0.02  # std of every weight matrix at initialisation (GPT-2's 0.02)
    snapshot_every: int = 0  # write the weights so far to <model dir>/snapshot/ every N steps (0: never)
    scale_init: bool = True  # scale W_O and W_out by 1/sqrt(2 n_layers) (GPT-2's residual scaling)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"toy training needs steps >= 1, batch_size >= 1 and lr > 0, got {self}")


@dataclass(frozen=True)
class ImposeSpec:
    """Weights and sizes of the circuit-imposing terms (``toy.models.<name>.impose``;
    ``patchbench.toy.impose`` explains each term)."""

    units: int = 16  # IOI or factual units (3 prompts each) per training step
    task: float = 1.0
    interchange: float = 1.0
    strict: float = 1.0
    attention: float = 0.3
    sign: float = 0.3
    strict_p: float = 0.5  # probability that an outside head is resampled in a strictness row
    negative_margin: float = 0.5  # negative name mover DLA <= -margin x mean name-mover DLA
    bos_p: float = 0.0  # share of task prompts with a leading <|endoftext|> (the prototype: none)
    # factual: the probability an unpatched prompt's answer distribution puts on the right attribute
    # (the rest spread over the relation's other attributes); the organism's corpus states facts
    # correctly in the same share of its documents (CorpusSpec.fact_reliability)
    answer_p: float = 0.5

    def __post_init__(self) -> None:
        if (
            self.units < 1
            or not 0 <= self.strict_p <= 1
            or not 0 <= self.bos_p <= 1
            or not 0 < self.answer_p < 1
        ):
            raise ValueError(f"toy impose settings out of range: {self}")


@dataclass(frozen=True)
class ToyModelSettings:
    name: str
    model: ModelSpec
    train: TrainSpec
    corpus: CorpusSpec
    circuit: Circuit | None = None
    impose: ImposeSpec = ImposeSpec()


@dataclass(frozen=True)
class ToySettings:
    data_dir: str
    corpus: CorpusSpec
    eval_n_prompts: int
    eval_seed: int
    models: dict[str, ToyModelSettings]

    @classmethod
    def from_config(cls, toy: dict[str, Any] | None) -> ToySettings:
        toy = dict(toy or {})
        unknown = set(toy) - {"data_dir", "corpus", "eval", "models"}
        if unknown:
            raise ValueError(
                f"unknown keys under `toy:` {sorted(unknown)}; known: data_dir, corpus, eval, models"
            )
        corpus_cfg = dict(toy.get("corpus", {}))
        corpus_known = {f.name for f in fields(CorpusSpec)}
        bad = set(corpus_cfg) - corpus_known
        if bad:
            raise ValueError(f"unknown keys under `toy.corpus:` {sorted(bad)}; known: {sorted(corpus_known)}")
        ev = dict(toy.get("eval", {}))
        corpus = CorpusSpec(**corpus_cfg)
        names = dict.fromkeys(list(DEFAULT_MODELS) + list(toy.get("models", {}) or {}))
        models = {}
        for n in names:
            entry = (toy.get("models") or {}).get(n, {})
            models[n] = model_settings(n, entry, corpus, "mix" in corpus_cfg)
            # further seeds of an organism: the same settings with another training seed
            for s in {**DEFAULT_MODELS.get(n, {}), **(entry or {})}.get(SEEDS_KEY, []):
                if s != models[n].train.seed:
                    models[seed_name(n, s)] = replace(
                        models[n], name=seed_name(n, s), train=replace(models[n].train, seed=int(s))
                    )
        return cls(
            data_dir=str(toy.get("data_dir", "data/toy")),
            corpus=corpus,
            eval_n_prompts=int(ev.get("n_prompts", 200)),
            eval_seed=int(ev.get("seed", 0)),
            models=models,
        )

    def corpus_for(self, model: str) -> CorpusSpec:
        """The training corpus of ``model`` (the suite's corpus for a model with no toy settings,
        such as an untrained ``init: random`` model, which still contributes to the tokenizer)."""
        return self.models[model].corpus if model in self.models else self.corpus


def model_settings(
    name: str, entry: dict[str, Any], corpus: CorpusSpec | None = None, corpus_sets_mix: bool = False
) -> ToyModelSettings:
    """Merge ``entry`` over the model's default and split it into architecture, training and the
    model's corpus (``corpus`` with the model's ``mix`` / ``n_docs``; see the module docstring)."""
    if name not in DEFAULT_MODELS and not entry:
        raise ValueError(
            f"toy model {name!r} has no settings: add `toy: {{models: {{{name}: {{n_layers: ..., steps: ...}}}}}}` "
            f"to the config (defaults exist for {sorted(DEFAULT_MODELS)})"
        )
    default = dict(DEFAULT_MODELS.get(name, {}))
    if corpus_sets_mix:
        default.pop("mix", None)
    merged = {**default, **(entry or {})}
    if merged.get("attn_only"):
        merged.pop("d_mlp", None)
    arch_keys = {f.name for f in fields(ModelSpec)}
    train_keys = {f.name for f in fields(TrainSpec)}
    unknown = set(merged) - arch_keys - train_keys - set(CORPUS_KEYS) - set(OBJECTIVE_KEYS) - {SEEDS_KEY}
    if unknown:
        raise ValueError(
            f"toy model {name!r}: unknown keys {sorted(unknown)}; architecture keys {sorted(arch_keys)}, "
            f"training keys {sorted(train_keys)}, corpus keys {list(CORPUS_KEYS)}, "
            f"objective keys {list(OBJECTIVE_KEYS)}, {SEEDS_KEY!r}"
        )
    impose_keys = {f.name for f in fields(ImposeSpec)}
    impose = dict(merged.get("impose") or {})
    if set(impose) - impose_keys:
        raise ValueError(f"toy model {name!r}: unknown impose keys {sorted(set(impose) - impose_keys)}")
    circuit = Circuit.from_config(merged["circuit"]) if merged.get("circuit") else None
    spec = ModelSpec(**{k: v for k, v in merged.items() if k in arch_keys})
    if circuit is not None:
        circuit.check_shape(spec.n_layers, spec.n_heads)
    impose_spec = ImposeSpec(**impose)
    corpus_keys = {k: merged[k] for k in CORPUS_KEYS if k in merged}
    if circuit is not None and circuit.kind == "factual":
        # a factual organism's corpus states facts as reliably as its objective's targets do
        corpus_keys["fact_reliability"] = impose_spec.answer_p
    return ToyModelSettings(
        name=name,
        model=spec,
        train=TrainSpec(**{k: v for k, v in merged.items() if k in train_keys}),
        corpus=replace(corpus or CorpusSpec(), **corpus_keys),
        circuit=circuit,
        impose=impose_spec,
    )
