"""Snakemake wrapper: held-out accuracy of one toy model on the five task shapes (tasks absent from
its corpus mix are listed under ``not_scored``: patchbench.toy.evaluate.heldout_accuracy)."""

import json
import logging
from pathlib import Path

from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.evaluate import heldout_accuracy, heldout_prompts
from patchbench.toy.model import load_toy
from patchbench.toy.settings import ToySettings

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
model = load_toy(Path(snakemake.input.weights).parent)
held = HeldOut.from_json(Path(snakemake.input.heldout).read_text())
prompts = heldout_prompts(ToyVocab.load(settings.data_dir), held, settings.eval_n_prompts, settings.eval_seed)
name = snakemake.wildcards.model
mix = settings.models[name].corpus.mix if name in settings.models else None
scores = {"model": name, **heldout_accuracy(model, prompts, mix)}
Path(snakemake.output.accuracy).write_text(json.dumps(scores, indent=1) + "\n")
logging.info("held-out accuracy: %s", json.dumps(scores))
