"""Snakemake wrapper: write the toy training corpus and its held-out combinations."""

import logging

from patchbench.toy.corpus import ToyVocab, generate_corpus, write_corpus
from patchbench.toy.settings import ToySettings

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
vocab = ToyVocab.load(settings.data_dir)
docs, held = generate_corpus(vocab, settings.corpus)
write_corpus(docs, held, snakemake.output.corpus, snakemake.output.heldout)
logging.info("wrote %d documents to %s", len(docs), snakemake.output.corpus)
