"""Snakemake wrapper: build the one toy tokenizer, shared by every toy model, from all their corpora."""

import logging
from pathlib import Path

from patchbench.toy.corpus import ToyVocab, read_corpus, vocabulary_texts
from patchbench.toy.settings import ToySettings
from patchbench.toy.tokenizer import build_tokenizer, save_tokenizer

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
extra = vocabulary_texts(ToyVocab.load(settings.data_dir))
docs = [d for path in snakemake.input.corpora for d in read_corpus(path)]
tok = build_tokenizer(docs, extra)
save_tokenizer(tok, Path(snakemake.output.tokenizer).parent)
logging.info("tokenizer with %d tokens written to %s", tok.get_vocab_size(), snakemake.output.tokenizer)
