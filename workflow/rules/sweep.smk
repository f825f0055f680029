"""Patching: a clean-activation cache per (model, task), a sweep job per (model, experiment), effects.

A sweep job runs every cell (corruption x window) of one experiment on one model: the model and the
clean cache load once, and each cell still writes its own raw frame, log and resumable chunks
(`<cell>.chunks`). Loading is what a job pays once: Python start-up with TransformerLens takes
~10 s, against < 1 s of patching per toy cell, and a 6B model's weights take minutes. Each
experiment gets its own rule, `sweep_<experiment>`.
"""


rule clean_cache:
    input:
        prompts=R("prompts/{model}/{task}.parquet"),
        weights=weight_files,
    output:
        R("cache/{model}/{task}.clean.safetensors"),
    log:
        LOG("cache/{model}/{task}.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
        sites=lambda w: sites_for(w.model, w.task),
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 30),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/clean_cache.py"


def _sweep_rule(name):
    """The rule that runs experiment ``name``'s sweep cells for one model (wildcard ``model``)."""
    exp = EXPERIMENTS[name]
    cells = experiment_grid(name)
    task, site, position = exp["task"], exp["site"], exp.get("position", "all")

    rule:
        name:
            f"sweep_{name}"
        input:
            prompts=R("prompts", "{model}", f"{task}.parquet"),
            cache=R("cache", "{model}", f"{task}.clean.safetensors"),
            weights=weight_files,
        output:
            [sweep_path("{model}", task, c, site, position, w) for c, w in cells],
        log:
            [LOG("sweeps", "{model}", task, c, f"{site}-{position}_w{w}.log") for c, w in cells],
        wildcard_constraints:
            model=one_of(exp["models"]),
        priority: lambda w: long_sweep_priority(w.model, task)
        params:
            model=lambda w: config["models"][w.model],
            results_dir=RESULTS,
            experiment=exp,
            cells=cells,
            noise=config["noise"],
        threads: lambda w: model_resources(w.model, "threads", 2)
        resources:
            mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
            runtime=lambda w: model_resources(w.model, "runtime", 60) * len(cells),
            gpu=lambda w: model_resources(w.model, "gpu", 0),
        script:
            "../scripts/sweep.py"


for _name in EXPERIMENTS:
    _sweep_rule(_name)


rule effects:
    input:
        R("sweeps/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet"),
    output:
        R("effects/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet"),
    log:
        LOG("effects/{model}/{task}/{corruption}/{site}-{position}_w{window}.log"),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/effects.py"
