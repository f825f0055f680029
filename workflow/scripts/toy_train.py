"""Snakemake wrapper: train one toy model (weights, config, training curve, summary, train.log)."""

import json
import logging
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from patchbench.toy.corpus import read_corpus
from patchbench.toy.settings import ToySettings
from patchbench.toy.train import train_toy

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
model = snakemake.wildcards.model
settings = ToySettings.from_config(snakemake.params.toy).models[model]
out_dir = Path(snakemake.output.weights).parent
with open(snakemake.log[0], "a") as progress:
    summary = train_toy(
        read_corpus(snakemake.input.corpus),
        Tokenizer.from_file(snakemake.input.tokenizer),
        settings.model,
        settings.train,
        out_dir,
        model,
        progress_file=progress,
    )
Path(snakemake.output.summary).write_text(json.dumps(summary, indent=1) + "\n")
logging.shutdown()
shutil.copyfile(snakemake.log[0], snakemake.output.train_log)
