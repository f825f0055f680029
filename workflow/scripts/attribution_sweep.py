"""Attribution sweep of one grid cell: raw frame + effects with detection (rule ``attribution_sweep``)."""

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
w = sm.wildcards
with rule_log(sm.log[0]) as log:
    spec = ModelSpec.from_config(w.model, sm.params.model, sm.params.results_dir)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    sweep = sweep_spec_for(
        w.corruption, w.site, w.position, w.window, heads=sm.params.experiment.get("heads"),
        noise=sm.params.noise, memory_budget_mb=spec.memory_budget_mb,
    )
    metrics = metrics_for(w.task)
    qk_fix = bool(sm.params.qk_fix) and w.site == "attn_head" and w.position == "all"
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    raw = run_attribution(model, prompts, sweep, clean, metrics=metrics, qk_fix=qk_fix, logger=log)
    meta = dict(raw.attrs.get("patchbench", {}))
    meta.update(
        model=w.model,
        task=w.task,
        corruption=w.corruption,
        site=w.site,
        position=w.position,
        window=int(w.window),
        method="attribution",
    )
    write_frame(raw, sm.output.raw, meta)
    eff = effects(
        raw, metrics=metrics, model=w.model, task=w.task, corruption=w.corruption, method="attribution"
    )
    eff = detect(eff, float(sm.params.k))
    write_frame(eff, sm.output.effects, {**meta, **eff.attrs.get("patchbench", {}), "method": "attribution"})
    log.info(
        "attribution %s: %d components x %d metrics; detected: %s",
        w,
        eff["component"].nunique(),
        len(metrics),
        eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"),
    )
