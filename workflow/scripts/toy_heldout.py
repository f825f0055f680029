"""Snakemake wrapper: the combinations every toy corpus holds out (what held-out accuracy uses)."""

import logging
from pathlib import Path

from patchbench.toy.corpus import ToyVocab, make_heldout
from patchbench.toy.settings import ToySettings

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = ToySettings.from_config(snakemake.params.toy)
held = make_heldout(ToyVocab.load(settings.data_dir), settings.corpus.heldout_fraction, settings.corpus.seed)
Path(snakemake.output.heldout).write_text(held.to_json() + "\n")
logging.info(
    "held out %d IOI name pairs, %d years, %d docstring pairs, %d arithmetic queries",
    len(held.ioi_pairs),
    len(held.gt_years),
    len(held.doc_pairs),
    len(held.arith),
)
