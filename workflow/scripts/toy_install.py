"""Snakemake wrapper (target train_organisms): install one trained organism with provenance.json."""

import json
from pathlib import Path

from patchbench.runlog import rule_log
from patchbench.toy.provenance import install
from patchbench.toy.settings import ToySettings

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    toy = ToySettings.from_config(sm.params.toy)
    record = install(
        Path(sm.input.weights).parent,
        {"heldout.json": sm.input.heldout},
        Path(sm.output.provenance).parent,
        toy.models[sm.wildcards.model],
        command=sm.params.command,
        repo=Path(sm.params.repo),
    )
    log.info("provenance: %s", json.dumps(record, indent=1))
