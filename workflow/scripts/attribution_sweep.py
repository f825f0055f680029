"""Attribution sweeps of one experiment on one model (rules ``attribution_<experiment>``).

Per cell (corruption x window): the raw frame and its effects with detection. The model, prompts
and clean cache load once.
"""

from safetensors.torch import load_file

from patchbench.attribution import run_attribution
from patchbench.detection import detect
from patchbench.frames import write_frame
from patchbench.metrics import effects, metrics_for
from patchbench.models import ModelSpec, load_model, resolve_device
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log
from patchbench.sites import sweep_spec_for

sm = snakemake  # noqa: F821  (injected by Snakemake)
exp, name = sm.params.experiment, sm.wildcards.model
task, site, position = exp["task"], exp["site"], exp.get("position", "all")
metrics = metrics_for(task)
qk_fix = bool(sm.params.qk_fix) and site == "attn_head" and position == "all"
with rule_log(sm.log[0]) as log:
    spec = ModelSpec.from_config(name, sm.params.model, sm.params.results_dir)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    log.info("%s loaded once for %d attribution cells of %s", name, len(sm.params.cells), task)
cells = zip(sm.params.cells, sm.output.raw, sm.output.effects, sm.log, strict=True)
for (corruption, window), raw_path, effects_path, log_path in cells:
    with rule_log(log_path) as log:
        sweep = sweep_spec_for(
            corruption, site, position, window, heads=exp.get("heads"),
            noise=sm.params.noise, memory_budget_mb=spec.memory_budget_mb,
        )
        raw = run_attribution(model, prompts, sweep, clean, metrics=metrics, qk_fix=qk_fix, logger=log)
        meta = dict(raw.attrs.get("patchbench", {}))
        meta.update(model=name, task=task, corruption=corruption, site=site, position=position,
                    window=int(window), method="attribution")
        write_frame(raw, raw_path, meta)
        eff = effects(raw, metrics=metrics, model=name, task=task, corruption=corruption,
                      method="attribution")
        eff = detect(eff, float(sm.params.k))
        write_frame(eff, effects_path, {**meta, **eff.attrs.get("patchbench", {}), "method": "attribution"})
        log.info(
            "attribution %s %s w%s: %d components x %d metrics; detected: %s", corruption, site, window,
            eff["component"].nunique(), len(metrics),
            eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"),
        )
