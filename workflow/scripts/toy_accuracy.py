"""Snakemake wrapper: held-out accuracy of one toy model on the five task shapes.

A task that the model's corpus mix gives no documents (organism-facts: IOI, docstring) is not
scored: its prompts may hold words outside the model's own tokenizer, and the model never saw the
task. accuracy.json lists such tasks under ``not_scored``."""

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
mix = (
    settings.models[snakemake.wildcards.model].corpus.mix
    if snakemake.wildcards.model in settings.models
    else None
)
unseen = sorted({p.task for p in prompts if mix is not None and mix.get(p.task, 0) <= 0})
scores = evaluate_model(model, [p for p in prompts if p.task not in unseen])
scores = {"model": snakemake.wildcards.model, "tasks": scores}
if unseen:
    scores["not_scored"] = {t: "no documents of this task in the model's corpus mix" for t in unseen}
Path(snakemake.output.accuracy).write_text(json.dumps(scores, indent=1) + "\n")
logging.info("held-out accuracy: %s", json.dumps(scores))
