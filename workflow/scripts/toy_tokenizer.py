"""Snakemake wrapper: build the toy tokenizer from the corpus (shared by every toy model)."""

import logging
from pathlib import Path

from patchbench.toy.corpus import ToyVocab, read_corpus, vocabulary_texts
from patchbench.toy.settings import ToySettings
from patchbench.toy.tokenizer import build_tokenizer, save_tokenizer

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
extra = vocabulary_texts(ToyVocab.load(settings.data_dir))
tok = build_tokenizer(read_corpus(snakemake.input.corpus), extra)
save_tokenizer(tok, Path(snakemake.output.tokenizer).parent)
logging.info("tokenizer with %d tokens written to %s", tok.get_vocab_size(), snakemake.output.tokenizer)
