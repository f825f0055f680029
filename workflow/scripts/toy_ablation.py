"""Snakemake wrapper: the mean-ablation check of one IOI organism (ablation.json beside its weights)."""

import json
from pathlib import Path

import torch

from patchbench.runlog import rule_log
from patchbench.toy.ablation import organism_check
from patchbench.toy.corpus import HeldOut
from patchbench.toy.model import load_toy
from patchbench.toy.settings import ToySettings

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    torch.set_num_threads(sm.threads)
    toy = ToySettings.from_config(sm.params.toy)
    model_dir = Path(sm.input.weights).parent
    held = HeldOut.from_json(Path(sm.input.heldout).read_text())
    report = organism_check(
        load_toy(model_dir), model_dir, toy.data_dir, held, toy.eval_n_prompts, toy.eval_seed
    )
    Path(sm.output.ablation).write_text(json.dumps(report, indent=1) + "\n")
    log.info("ablation check: %s", json.dumps(report))
