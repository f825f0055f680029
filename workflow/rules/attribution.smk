"""Attribution patching beside exact patching: one attribution sweep per grid cell, and their agreement.

`attribution_sweep` estimates every effect of a sweep from one forward and a few backward passes
(patchbench.attribution) and writes the raw frame (`.raw.parquet`, the engine's raw schema) and its
effects with detection (the effects schema, method = attribution). `agreement` pairs those effects
with the exact ones of the same cells, per (model, task).

Config (all optional; defaults in brackets): attribution.qk_fix [false] applies AtP*'s QK fix to
whole-head sweeps (attn_head, position all); attribution.k [2.0] the detection threshold in SDs;
attribution.top [5] disagreeing components listed per plot; attribution.tasks [ioi, factual] the
tasks whose agreement `agreement_targets()` asks for; attribution.windows [all] the window sizes
whose cells enter it.
"""


ATTRIB = config["attribution"]  # defaults from the schema


def attrib_raw_path(model, task, corruption, site, position, window):
    return R("attrib", model, task, corruption, f"{site}-{position}_w{window}.raw.parquet")


def attrib_effects_path(model, task, corruption, site, position, window):
    return R("attrib", model, task, corruption, f"{site}-{position}_w{window}.parquet")


def cells_of(model, task):
    """Every configured sweep cell of (model, task) whose window is in attribution.windows (when set)."""
    windows = ATTRIB.get("windows")
    return sorted(
        {
            c
            for n in EXPERIMENTS
            for c in experiment_cells(n)
            if c[0] == model and c[1] == task and (windows is None or c[5] in windows)
        }
    )


def agreement_targets():
    """Agreement tables and figures for every configured model of attribution.tasks."""
    out = []
    for task in ATTRIB.get("tasks", ["ioi", "factual"]):
        models = sorted({c[0] for n in experiments_of(task=task) for c in experiment_cells(n)})
        for m in models:
            out += [
                R("tables", f"agreement_{m}_{task}.csv"),
                R("tables", f"agreement_{m}_{task}.md"),
                F(f"agreement_{m}_{task}.png"),
                F(f"agreement_{m}_{task}.pdf"),
            ]
    return out


rule attribution_sweep:
    input:
        prompts=R("prompts/{model}/{task}.parquet"),
        cache=R("cache/{model}/{task}.clean.safetensors"),
        weights=weight_files,
    output:
        raw=R("attrib/{model}/{task}/{corruption}/{site}-{position}_w{window}.raw.parquet"),
        effects=R("attrib/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet"),
    log:
        LOG("attrib/{model}/{task}/{corruption}/{site}-{position}_w{window}.log"),
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
        experiment=find_experiment,
        noise=config["noise"],
        qk_fix=ATTRIB.get("qk_fix", False),
        k=ATTRIB.get("k", 2.0),
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 30),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/attribution_sweep.py"


rule agreement:
    input:
        exact=lambda w: [exact_effects_path(*c) for c in cells_of(w.model, w.task)],
        attribution=lambda w: [attrib_effects_path(*c) for c in cells_of(w.model, w.task)],
    output:
        csv=R("tables/agreement_{model}_{task}.csv"),
        md=R("tables/agreement_{model}_{task}.md"),
        png=F("agreement_{model}_{task}.png"),
        pdf=F("agreement_{model}_{task}.pdf"),
    log:
        LOG("tables/agreement_{model}_{task}.log"),
    params:
        k=ATTRIB.get("k", 2.0),
        top=ATTRIB.get("top", 5),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/attribution_agreement.py"


rule agreement_all:
    input:
        agreement_targets(),
