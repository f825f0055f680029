"""Run every sweep cell of one experiment on one model (rules ``sweep_<experiment>``).

The model, prompts and clean cache load once; each cell (corruption x window) then writes its own
raw frame and log, and resumes from its own ``<cell>.chunks`` directory after a kill.
"""

from pathlib import Path

from safetensors.torch import load_file

from patchbench.frames import write_frame
from patchbench.models import ModelSpec, load_model, resolve_device
from patchbench.patching import run_sweep
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log
from patchbench.sites import sweep_spec_for

sm = snakemake  # noqa: F821  (injected by Snakemake)
exp, name = sm.params.experiment, sm.wildcards.model
site, position = exp["site"], exp.get("position", "all")
with rule_log(sm.log[0]) as log:
    spec = ModelSpec.from_config(name, sm.params.model, sm.params.results_dir)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    log.info("%s loaded once for %d sweep cells of %s", name, len(sm.params.cells), exp["task"])
for (corruption, window), out, log_path in zip(sm.params.cells, sm.output, sm.log, strict=True):
    with rule_log(log_path) as log:
        sweep = sweep_spec_for(
            corruption, site, position, window, heads=exp.get("heads"),
            noise=sm.params.noise, memory_budget_mb=spec.memory_budget_mb,
        )
        chunks = Path(out).with_suffix(".chunks")
        raw = run_sweep(model, prompts, sweep, clean, logger=log, checkpoint_dir=chunks)
        meta = dict(raw.attrs.get("patchbench", {}))
        meta.update(model=name, task=exp["task"], corruption=corruption, site=site, position=position,
                    window=int(window), method="exact")
        write_frame(raw, out, meta)
        log.info("wrote %d rows to %s", len(raw), out)
