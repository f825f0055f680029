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

from patchbench.config import seed_name
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import CorpusSpec

__all__ = [
    "DEFAULT_MODELS",
    "ImposeSpec",
    "ModelSpec",
    "ToyModelSettings",
    "ToySettings",
    "TrainSpec",
]

CORPUS_KEYS = (
    "mix",
    "n_docs",
    "ioi_answer_p",
    "ioi_third_name",
)  # corpus keys a model entry may set for its own corpus
OBJECTIVE_KEYS = ("circuit", "impose")  # the circuit an organism is trained to implement, and how
RECORD_KEYS = ("development",)  # what the recipe's development tried (provenance.json), no effect on training


# The demo patches each organism on its own task (README, "Install and run the demo"): organism-ioi
# on IOI, organism-facts on factual recall, organism-greater-than, organism-arithmetic and
# organism-docstring on theirs; each trains mostly on its own task's documents.
DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    # The IOI model organism: Wang et al.'s circuit with the complications documented for GPT-2
    # small (models/organisms/README.md): 8 x 12 attention-only heads, the classes of Table 1 (Wang
    # et al.'s counts of name movers, negative name movers and S-inhibition heads: 3, 2, 4; two
    # duplicate-token, induction and previous-token heads), 3 backup name movers, two duplicate-detection
    # paths, a third of the other heads left unconstrained (a tail), an IOI continuation that is
    # the IO in half of the corpus's documents. Imposed by patchbench.toy.impose_ioi; three seeds
    # (organism-ioi, organism-ioi-seed1, organism-ioi-seed2), trained by
    # `snakemake --cores 2 train_organisms` and shipped in models/organisms/.
    "organism-ioi": {
        "n_layers": 8,
        "d_model": 128,
        "n_heads": 12,
        "d_head": 16,
        "attn_only": True,
        "n_ctx": 64,
        "steps": 1500,
        "batch_size": 16,
        "lr": 3e-3,
        "warmup": 100,
        "weight_decay": 0.05,
        "embed_init_std": 0.1,  # token embeddings at GPT-2 small's scale (per-coordinate RMS ~0.1)
        "decay_embeddings": False,
        "seed": 0,
        "seeds": [0, 1, 2],
        "threads": 1,
        "snapshot_every": 250,
        "n_docs": 30000,
        # the recipe's development: 500-step runs of this shape (seed 0, measured with
        # patchbench.toy.checks on 100 held-out prompts), each judged by the mechanisms and the
        # issue's statistics only, never by a claim of the paper
        "development": [
            "r1 hard attention terms, no direct-effect bound: S-inhibition heads suppress S directly "
            "(DLA 0.4-0.9), name movers DLA 0.3, gn_ratio 0.79, clean_p 0.38",
            "r2 + attention target 0.6 and a direct-effect bound on the S-inhibition / duplicate / "
            "induction heads: layer-0 heads copy both names, name movers DLA 0.01, gn_ratio 0.65",
            "r3 + the bound on every non-mover head (IO-S and IO-mean name), whole-head mean ablation, "
            "third-name documents: name movers DLA 0.8-1.8, backup compensation 0.62, gn_ratio 0.66",
            "r4 + template-matched means (three resampled prompts), token embeddings std 0.1 without "
            "decay, sign weight 1: negative name movers DLA -0.37, gn_ratio 0.54, induction path unused",
            "r5 + sharp previous-token heads, ten other endings, 12 units: gn_ratio 0.54, induction "
            "path still unused (duplicate head 0.7 alone a bottleneck), clean_p 0.28 at 500 steps",
            "r6 = r5 with redundancy weight 3: IOI not learned in 600 steps (logit difference 0.01); "
            "not used. Final: r5's settings for 1500 steps",
        ],
        "ioi_answer_p": 0.5,
        "ioi_third_name": 0.2,
        "mix": {
            "ioi": 0.35,
            "docstring": 0.35,
            "greater_than": 0.05,
            "arithmetic": 0.05,
            "factual": 0.05,
            "filler": 0.15,
        },
        "circuit": {
            "kind": "ioi",
            "heads": {
                "previous_token": ["0.3", "1.10"],
                "duplicate_token": ["0.7", "1.5"],
                "induction": ["2.4", "3.8"],
                "s_inhibition": ["4.1", "4.6", "5.2", "5.9"],
                "name_mover": ["6.0", "6.5", "6.11"],
                "backup_name_mover": ["7.1", "7.4", "7.7"],
                "negative_name_mover": ["7.3", "7.10"],
            },
            "notes": {
                "previous_token": "every token attends to the one before (sharp); feeds the induction heads",
                "duplicate_token": "S2 attends to S1: one of two duplicate-detection paths, each sufficient alone",
                "induction": "S2 attends to S1+1 through the previous-token heads: the other duplicate-detection path",
                "s_inhibition": "END attends to S2 and tells the name movers which name is S; little direct effect",
                "name_mover": "END attends to IO and copies it (positive direct logit attribution)",
                "backup_name_mover": "little direct effect on clean prompts; copies IO when the name movers are ablated",
                "negative_name_mover": "END attends to IO and writes against it (negative direct logit attribution)",
            },
            "unconstrained": [
                "0.0",
                "0.9",
                "1.2",
                "1.8",
                "2.1",
                "2.7",
                "2.11",
                "3.2",
                "3.5",
                "3.10",
                "4.3",
                "4.9",
                "5.0",
                "5.6",
                "5.11",
                "6.2",
                "6.8",
                "7.5",
                "7.9",
            ],  # fmt: skip
            # what the organism is stated to have (checked by `patchbench organisms --check`,
            # models/organisms/README.md): the statistics and the mechanisms it asks for
            "properties": {
                "clean_p": [0.3, 0.7],
                "gn_ratio": [0.1, 0.5],
                "top1": [0.9, None],
                "circuit_ablation": [None, 0.2],
                "random_ablation_min": [0.8, None],
                "attention_previous_token_min": [0.3, None],
                "attention_duplicate_token_min": [0.3, None],
                "attention_induction_min": [0.3, None],
                "attention_s_inhibition_min": [0.3, None],
                "attention_name_mover_min": [0.3, None],
                "attention_negative_name_mover_min": [0.3, None],
                "dla_name_mover_min": [0.0, None],
                "dla_negative_name_mover_max": [None, 0.0],
                "n_negative_name_mover": [2, None],
                "indirect_dla_max": [None, 0.25],
                "backup_compensation": [0.2, None],
                "backup_attention_with_name_movers_ablated_min": [0.3, None],
                "single_path_ablation_min": [0.5, None],
                "redundancy_gap": [0.1, None],
                "outside_heads_with_effect": [5, None],
                "outside_effect_max": [None, 0.2],
            },
        },
        "impose": {"units": 12, "attention_target": 0.6, "redundancy": 1.0, "sign": 1.0},
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
    embed_init_std: float | None = None  # std of the token embeddings at initialisation (None: init_std)
    decay_embeddings: bool = True  # weight decay on the token embeddings too
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
    redundancy: float = 1.0  # IOI: each duplicate-detection path alone carries the duplicate
    backup: float = 1.0  # IOI: backup name movers take over from ablated name movers
    strict_p: float = 0.5  # probability that an outside head is resampled in a strictness row
    negative_margin: float = 0.5  # negative name mover DLA <= -margin x mean name-mover DLA
    backup_quiet: float = 0.2  # backup DLA <= quiet x mean name-mover DLA on clean prompts
    backup_active: float = 0.5  # backup DLA >= active x mean name-mover DLA with the name movers ablated
    attention_target: float = 1.0  # the attention terms pull each class head's attention to this
    indirect: float = 1.0  # IOI: heads that act through the name movers write little to the logits
    indirect_max: float = 0.1  # their |DLA| <= indirect_max x mean name-mover DLA
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
        if not 0 < self.attention_target <= 1:
            raise ValueError(f"toy impose attention_target must be in (0, 1], got {self.attention_target}")


@dataclass(frozen=True)
class ToyModelSettings:
    name: str
    model: ModelSpec
    train: TrainSpec
    corpus: CorpusSpec
    circuit: Circuit | None = None
    impose: ImposeSpec = ImposeSpec()
    development: tuple[str, ...] = ()


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
        entries = dict(toy.get("models") or {})
        models: dict[str, ToyModelSettings] = {}
        seeds_of = {
            n: list((entries.get(n) or {}).get("seeds", DEFAULT_MODELS.get(n, {}).get("seeds", [0])))
            for n in dict.fromkeys(list(DEFAULT_MODELS) + list(entries))
        }
        seed_names = {seed_name(n, s) for n, ss in seeds_of.items() for s in ss if s}
        for n, seeds in seeds_of.items():
            if n in seed_names:  # settings of one seed of another model: merged there
                continue
            entry = {k: v for k, v in (entries.get(n) or {}).items() if k != "seeds"}
            for seed in seeds:  # one organism per seed: <name> (seed 0), <name>-seed<S>
                name = seed_name(n, seed)
                own = {**entry, **({"seed": seed} if seed else {}), **dict(entries.get(name) or {})}
                models[name] = model_settings(n, own, corpus, "mix" in corpus_cfg, name_as=name)
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
    name: str,
    entry: dict[str, Any],
    corpus: CorpusSpec | None = None,
    corpus_sets_mix: bool = False,
    *,
    name_as: str | None = None,
) -> ToyModelSettings:
    """Merge ``entry`` over the model's default and split it into architecture, training and the
    model's corpus (``corpus`` with the model's ``mix`` / ``n_docs``; see the module docstring).
    ``name_as``: the name of the settings when it is not ``name`` (a seed of ``name``)."""
    if name not in DEFAULT_MODELS and not entry:
        raise ValueError(
            f"toy model {name!r} has no settings: add `toy: {{models: {{{name}: {{n_layers: ..., steps: ...}}}}}}` "
            f"to the config (defaults exist for {sorted(DEFAULT_MODELS)})"
        )
    default = dict(DEFAULT_MODELS.get(name, {}))
    if corpus_sets_mix:
        default.pop("mix", None)
    merged = {**default, **(entry or {})}
    merged.pop("seeds", None)  # expanded by ToySettings.from_config
    if merged.get("attn_only"):
        merged.pop("d_mlp", None)
    arch_keys = {f.name for f in fields(ModelSpec)}
    train_keys = {f.name for f in fields(TrainSpec)}
    unknown = set(merged) - arch_keys - train_keys - set(CORPUS_KEYS) - set(OBJECTIVE_KEYS) - set(RECORD_KEYS)
    if unknown:
        raise ValueError(
            f"toy model {name!r}: unknown keys {sorted(unknown)}; architecture keys {sorted(arch_keys)}, "
            f"training keys {sorted(train_keys)}, corpus keys {list(CORPUS_KEYS)}, "
            f"objective keys {list(OBJECTIVE_KEYS)}, 'seeds'"
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
        name=name_as or name,
        model=spec,
        train=TrainSpec(**{k: v for k, v in merged.items() if k in train_keys}),
        corpus=replace(corpus or CorpusSpec(), **corpus_keys),
        circuit=circuit,
        impose=impose_spec,
        development=tuple(merged.get("development") or ()),
    )
