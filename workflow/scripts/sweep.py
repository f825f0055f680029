"""Run one sweep of the grid: one corruption, one site, one position rule, one window (rule ``sweep``)."""

from pathlib import Path

from safetensors.torch import load_file

from patchbench.frames import write_frame
from patchbench.models import ModelSpec, load_model, resolve_device
from patchbench.patching import run_sweep
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log
from patchbench.sites import sweep_spec_for

sm = snakemake  # noqa: F821  (injected by Snakemake)
w = sm.wildcards
with rule_log(sm.log[0]) as log:
    spec = ModelSpec.from_config(w.model, sm.params.model, sm.params.results_dir)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    sweep = sweep_spec_for(
        w.corruption, w.site, w.position, w.window, heads=sm.params.experiment.get("heads"),
        noise=sm.params.noise, memory_budget_mb=spec.memory_budget_mb,
    )
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    raw = run_sweep(model, prompts, sweep, clean, logger=log, checkpoint_dir=Path(sm.params.checkpoint_dir))
    meta = dict(raw.attrs.get("patchbench", {}))
    meta.update(model=w.model, task=w.task, corruption=w.corruption, site=w.site, position=w.position,
                window=int(w.window), method="exact")
    write_frame(raw, sm.output[0], meta)
    log.info("wrote %d rows to %s", len(raw), sm.output[0])
