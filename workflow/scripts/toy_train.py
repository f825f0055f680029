"""Snakemake wrapper: train one toy model (weights, config, circuit, training curve, summary, train.log)."""

import json
import logging
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from patchbench.toy.circuit import write_circuit
from patchbench.toy.corpus import HeldOut, ToyVocab, read_corpus
from patchbench.toy.impose import make_objective
from patchbench.toy.settings import ToySettings
from patchbench.toy.train import train_toy

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
model = snakemake.wildcards.model
toy = ToySettings.from_config(snakemake.params.toy)
settings = toy.models[model]
out_dir = Path(snakemake.output.weights).parent
tokenizer = Tokenizer.from_file(snakemake.input.tokenizer)
CIRCUIT_DESCRIPTION = (
    "imposed in training by patchbench.toy.impose (SIIT-style); properties: what the organism is "
    "stated to have, checked by `patchbench organisms --check` (models/organisms/README.md)"
)


def objective(n_layers, n_heads):
    """The circuit-imposing objective of an organism (None for a plain toy model)."""
    if settings.circuit is None:
        return None
    vocab = ToyVocab.load(toy.data_dir)
    held = HeldOut.from_json(Path(snakemake.input.heldout).read_text())
    return make_objective(
        settings.circuit,
        vocab,
        held,
        tokenizer,
        settings.impose,
        n_layers,
        n_heads,
        settings.train.seed,
        settings.corpus,
    )


with open(snakemake.log[0], "a") as progress:
    summary = train_toy(
        read_corpus(snakemake.input.corpus),
        tokenizer,
        settings.model,
        settings.train,
        out_dir,
        model,
        progress_file=progress,
        objective_factory=objective,
    )
if settings.circuit is not None:
    write_circuit(settings.circuit, out_dir, CIRCUIT_DESCRIPTION)
Path(snakemake.output.summary).write_text(json.dumps(summary, indent=1) + "\n")
logging.shutdown()
shutil.copyfile(snakemake.log[0], snakemake.output.train_log)
