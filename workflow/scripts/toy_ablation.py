"""Snakemake wrapper: the check of one organism (ablation.json beside its weights).

IOI: the classifier and the mean-ablation check (patchbench.toy.ablation). Other circuit kinds: the
kind's independent check by plain forward hooks (patchbench.toy.checks_<kind>.check)."""

import importlib
import json
from pathlib import Path

import torch

from patchbench.runlog import rule_log
from patchbench.toy.ablation import organism_check
from patchbench.toy.circuit import read_circuit
from patchbench.toy.corpus import HeldOut
from patchbench.toy.model import load_toy
from patchbench.toy.settings import ToySettings

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    torch.set_num_threads(sm.threads)
    toy = ToySettings.from_config(sm.params.toy)
    model_dir = Path(sm.input.weights).parent
    held = HeldOut.from_json(Path(sm.input.heldout).read_text())
    circuit = read_circuit(model_dir)
    if circuit is not None and circuit.kind != "ioi":
        check = importlib.import_module(f"patchbench.toy.checks_{circuit.kind}").check
        report = check(load_toy(model_dir), circuit, toy.data_dir)
    else:
        report = organism_check(
            load_toy(model_dir), model_dir, toy.data_dir, held, toy.eval_n_prompts, toy.eval_seed
        )
    Path(sm.output.ablation).write_text(json.dumps(report, indent=1) + "\n")
    log.info("ablation check: %s", json.dumps(report))
