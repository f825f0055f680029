"""Toy suite: corpora -> tokenizer -> trained toy models (TransformerLens native) under <results_dir>/models/{model}/.

Settings: the `toy:` config section (patchbench.toy.settings; every key optional). A toy model
trained in the run is any `models.<name>` entry with `source: toy` and no `path`; its training
settings come from `toy.models.<name>` merged over the package defaults (organism-ioi,
organism-facts and its further seeds organism-facts-seed<S>, organism-greater-than,
organism-arithmetic, organism-docstring).

Shipped toy models (the model organisms: toy models with a circuit imposed in training,
patchbench.toy.impose) live under models/organisms/{model}/ and are read from
there (`path:` in the config); `snakemake --cores 2 train_organisms` retrains them under
<results_dir>/models/{model}/ (each with a tokenizer of its own corpus; every seed of a multi-seed
organism as <model>-seed<S>), checks the organisms (ablation.json, checks.json) and installs them
with provenance.json.
"""

import shlex
import sys

from patchbench.tasks import TASKS
from patchbench.toy.checks import CHECKS
from patchbench.toy.provenance import SHIPPED_DIR
from patchbench.toy.settings import ToySettings

TOY_CFG = config["toy"]
TOY = ToySettings.from_config(TOY_CFG)
# Toy models this workflow trains (a toy model whose `path` names another directory is used as it is).
TOY_MODELS = [m for m in config["models"] if _trained_here(model_spec(m))]
# Shipped toy models (the model organisms): every package-default toy model this run does not train.
ORGANISMS = [m for m in TOY.models if m not in TOY_MODELS]
CIRCUIT_ORGANISMS = [m for m in ORGANISMS if TOY.models[m].circuit is not None]  # checked: ablation.json
# organisms whose circuit kind has an independent check (patchbench.toy.checks.CHECKS): checks.json
CHECKED_ORGANISMS = [m for m in CIRCUIT_ORGANISMS if TOY.models[m].circuit.kind in CHECKS]
ORGANISM_DIR = SHIPPED_DIR  # the shipped organisms (committed)
# Toy models the config patches: trained in this run, or shipped with their accuracy.json and
# train_summary.json beside the weights.
CONFIG_TOYS = [m for m, e in config["models"].items() if e["source"] == "toy" and e["init"] == "trained"]


def toy_model_file(model, name):
    """A file of toy model ``model``'s directory: under results/models when this run trains it,
    else in the directory its ``path`` names (a shipped organism)."""
    return R("models", model, name) if model in TOY_MODELS else str(Path(model_spec(model).path, name))


TOY_DATA_FILES = [
    str(Path(TOY.data_dir, f))
    for f in (
        "ioi/ioi_vocab.json",
        "greater-than/greaterthan_nouns.json",
        "greater-than/greaterthan_years.json",
        "docstring/docstring_words.json",
        "arithmetic/arithmetic_templates.json",
        "rome/known_1000.json",
        "corpus/corpus_material.json",
    )
]
TOY_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def patched_families(model):
    """Task families (ioi, greater_than, ...) the configured experiments patch ``model`` on (tasks read
    from files have no held-out accuracy to mark)."""
    return sorted({TASKS[c.task].family for c in all_cells() if c.model == model and c.task in TASKS})


def toy_threads(wildcards):
    return TOY.models[wildcards.model].train.threads if wildcards.model in TOY.models else 1


rule toy_heldout:
    """The combinations every toy corpus leaves out (held-out accuracy is measured on them)."""
    input:
        TOY_DATA_FILES,
    output:
        heldout=R("toy", "heldout.json"),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "heldout.log"),
    localrule: True
    script:
        "../scripts/toy_heldout.py"


rule toy_corpus:
    """One toy model's project-authored training corpus: documents joined by <|endoftext|>, in
    the model's mix of document kinds, none of them using a held-out combination."""
    input:
        TOY_DATA_FILES,
    output:
        corpus=R("toy", "corpus", "{model}.txt"),
    wildcard_constraints:
        model=one_of(TOY_MODELS + ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.corpus.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/toy_corpus.py"


rule toy_tokenizer:
    """Word-level tokenizer with GPT-2-like segmentation, built from every toy model's corpus."""
    input:
        TOY_DATA_FILES,
        corpora=[R("toy", "corpus", f"{m}.txt") for m in TOY_MODELS],
    output:
        tokenizer=R("toy", "tokenizer", "tokenizer.json"),
        config=R("toy", "tokenizer", "tokenizer_config.json"),
        specials=R("toy", "tokenizer", "special_tokens_map.json"),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "tokenizer.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/toy_tokenizer.py"


rule toy_model_tokenizer:
    """Each toy model directory carries the shared tokenizer."""
    input:
        [R("toy", "tokenizer", f) for f in TOY_TOKENIZER_FILES],
    output:
        [R("models", "{model}", f) for f in TOY_TOKENIZER_FILES],
    wildcard_constraints:
        model=one_of(TOY_MODELS),
    log:
        LOG("toy", "{model}.tokenizer.log"),
    localrule: True
    shell:
        "for f in {input}; do cp $f $(dirname {output[0]})/; done > {log} 2>&1"


rule organism_tokenizer:
    """An organism's own tokenizer, from its corpus (it does not change the shared toy tokenizer)."""
    input:
        TOY_DATA_FILES,
        corpora=[R("toy", "corpus", "{model}.txt")],
    output:
        tokenizer=R("models", "{model}", "tokenizer.json"),
        config=R("models", "{model}", "tokenizer_config.json"),
        specials=R("models", "{model}", "special_tokens_map.json"),
    wildcard_constraints:
        model=one_of(ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.tokenizer.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/toy_tokenizer.py"


rule toy_train:
    """Train one toy model (deterministic given its seed and thread count); an organism also trains
    on its circuit-imposing objective and gets circuit.json."""
    input:
        corpus=R("toy", "corpus", "{model}.txt"),
        tokenizer=R("models", "{model}", "tokenizer.json"),
        heldout=R("toy", "heldout.json"),
    output:
        weights=R("models", "{model}", "model.safetensors"),
        config=R("models", "{model}", "config.json"),
        curve=R("models", "{model}", "training_curve.csv"),
        summary=R("models", "{model}", "train_summary.json"),
        train_log=R("models", "{model}", "train.log"),
    wildcard_constraints:
        model=one_of(TOY_MODELS + ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.train.log"),
    threads: toy_threads
    priority: 50  # a run that trains toy models: start training before any job that could wait
    resources:
        mem_mb=3000,
        runtime=30,
    script:
        "../scripts/toy_train.py"


rule toy_accuracy:
    """Held-out accuracy per task shape (accuracy.json next to the weights)."""
    input:
        TOY_DATA_FILES,
        weights=R("models", "{model}", "model.safetensors"),
        config=R("models", "{model}", "config.json"),
        tokenizer=R("models", "{model}", "tokenizer.json"),
        heldout=R("toy", "heldout.json"),
    output:
        accuracy=R("models", "{model}", "accuracy.json"),
    wildcard_constraints:
        model=one_of(TOY_MODELS + ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.accuracy.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/toy_accuracy.py"


rule toy_accuracy_table:
    """Held-out accuracy, goals and training time of every toy model the config patches (trained in
    this run or shipped), in one table."""
    input:
        accuracy=[toy_model_file(m, "accuracy.json") for m in CONFIG_TOYS],
        summary=[toy_model_file(m, "train_summary.json") for m in CONFIG_TOYS],
    output:
        csv=report(R("toy", "accuracy.csv"), caption="../report/toy_accuracy.rst", category="Toy models"),
        md=R("toy", "accuracy.md"),
    params:
        patched={m: patched_families(m) for m in CONFIG_TOYS},
    log:
        LOG("toy", "accuracy_table.log"),
    localrule: True
    script:
        "../scripts/toy_accuracy_table.py"


rule toy:
    """Target: train every toy model and tabulate its held-out accuracy."""
    input:
        R("toy", "accuracy.csv"),


rule organism_ablation:
    """The check of a trained organism: for IOI the mean-ablation check (patchbench.toy.ablation:
    the classified circuit ablated vs as many heads outside it, on held-out prompts), for every
    other circuit kind its independent check by plain hooks (patchbench.toy.checks_<kind>)."""
    input:
        TOY_DATA_FILES,
        weights=R("models", "{model}", "model.safetensors"),
        tokenizer=R("models", "{model}", "tokenizer.json"),
        heldout=R("toy", "heldout.json"),
    output:
        ablation=R("models", "{model}", "ablation.json"),
    wildcard_constraints:
        model=one_of(CIRCUIT_ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.ablation.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/toy_ablation.py"


rule organism_checks:
    """The independent checks of a trained organism (patchbench.toy.checks: attention, direct logit
    attribution, mean / resample ablation, backup compensation, Gaussian noise, with plain forward
    hooks) and the properties its circuit.json states: checks.json, shipped beside the weights."""
    input:
        TOY_DATA_FILES,
        weights=R("models", "{model}", "model.safetensors"),
        tokenizer=R("models", "{model}", "tokenizer.json"),
        heldout=R("toy", "heldout.json"),
    output:
        checks=R("models", "{model}", "checks.json"),
    wildcard_constraints:
        model=one_of(CHECKED_ORGANISMS),
    params:
        toy=TOY_CFG,
    log:
        LOG("toy", "{model}.checks.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/toy_checks.py"


rule organism_install:
    """Copy a trained organism into models/organisms/{model}/ with provenance.json (command, seed,
    git commit, wall time, load average): the directory the configs read and git ships."""
    input:
        weights=R("models", "{model}", "model.safetensors"),
        config=R("models", "{model}", "config.json"),
        tokenizer=[R("models", "{model}", f) for f in TOY_TOKENIZER_FILES],
        summary=R("models", "{model}", "train_summary.json"),
        curve=R("models", "{model}", "training_curve.csv"),
        ablation=lambda w: [R("models", w.model, "ablation.json")] if w.model in CIRCUIT_ORGANISMS else [],
        checks=lambda w: [R("models", w.model, "checks.json")] if w.model in CHECKED_ORGANISMS else [],
        accuracy=R("models", "{model}", "accuracy.json"),
        heldout=R("toy", "heldout.json"),
    output:
        provenance=f"{ORGANISM_DIR}/{{model}}/provenance.json",
    wildcard_constraints:
        model=one_of(ORGANISMS),
    params:
        toy=TOY_CFG,
        repo=workflow.basedir,
        command=shlex.join(["snakemake", *sys.argv[1:]]),  # this run's command line, for provenance.json
    log:
        LOG("toy", "{model}.install.log"),
    localrule: True
    script:
        "../scripts/toy_install.py"


rule train_organisms:
    """Target: retrain every model organism, check it and install it under models/organisms/."""
    input:
        [f"{ORGANISM_DIR}/{m}/provenance.json" for m in ORGANISMS],
