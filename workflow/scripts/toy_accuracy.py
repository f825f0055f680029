"""Snakemake wrapper: held-out accuracy of one toy model on the five task shapes."""

import json
import logging
from pathlib import Path

from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.evaluate import evaluate_model, heldout_prompts
from patchbench.toy.model import load_toy
from patchbench.toy.settings import ToySettings

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
model = load_toy(Path(snakemake.input.weights).parent)
held = HeldOut.from_json(Path(snakemake.input.heldout).read_text())
prompts = heldout_prompts(ToyVocab.load(settings.data_dir), held, settings.eval_n_prompts, settings.eval_seed)
scores = evaluate_model(model, prompts)
scores = {"model": snakemake.wildcards.model, "tasks": scores}
Path(snakemake.output.accuracy).write_text(json.dumps(scores, indent=1) + "\n")
logging.info("held-out accuracy: %s", json.dumps(scores))
