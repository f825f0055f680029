"""Snakemake wrapper: the independent checks of one trained organism (checks.json beside its weights)."""

import json
from pathlib import Path

import torch

from patchbench.runlog import rule_log
from patchbench.toy.checks import check_organism
from patchbench.toy.settings import ToySettings

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    torch.set_num_threads(sm.threads)
    toy = ToySettings.from_config(sm.params.toy)
    model = sm.wildcards.model
    stats = check_organism(
        Path(sm.input.weights).parent,
        toy.data_dir,
        toy.eval_n_prompts,
        toy.eval_seed,
        heldout=sm.input.heldout,
        train_seed=toy.models[model].train.seed,
    )
    Path(sm.output.checks).write_text(json.dumps(stats.to_dict(), indent=1) + "\n")
    log.info("%s", stats.line())
    for failure in stats.failures:
        log.warning("stated property fails: %s", failure)
