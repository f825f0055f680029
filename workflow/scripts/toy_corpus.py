"""Snakemake wrapper: write one toy model's training corpus (its own mix of document kinds)."""

import logging

from patchbench.toy.corpus import ToyVocab, generate_corpus, write_corpus
from patchbench.toy.settings import ToySettings

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
spec = settings.corpus_for(snakemake.wildcards.model)
docs, _ = generate_corpus(ToyVocab.load(settings.data_dir), spec)
write_corpus(docs, snakemake.output.corpus)
logging.info("wrote %d documents (mix %s) to %s", len(docs), spec.mix, snakemake.output.corpus)
