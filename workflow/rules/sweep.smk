"""Patching: one clean-activation cache per (model, task), one sweep per grid cell, then effects."""


rule clean_cache:
    input:
        prompts=R("prompts/{model}/{task}.parquet"),
        weights=weight_files,
    output:
        R("cache/{model}/{task}.clean.safetensors"),
    log:
        LOG("cache/{model}/{task}.log"),
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


rule sweep:
    input:
        prompts=R("prompts/{model}/{task}.parquet"),
        cache=R("cache/{model}/{task}.clean.safetensors"),
        weights=weight_files,
    output:
        R("sweeps/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet"),
    log:
        LOG("sweeps/{model}/{task}/{corruption}/{site}-{position}_w{window}.log"),
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
        experiment=find_experiment,
        noise=config["noise"],
        engine=config["engine"],
        checkpoint_dir=lambda w: R(
            "sweeps", w.model, w.task, w.corruption, f"{w.site}-{w.position}_w{w.window}.chunks"
        ),
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 60),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/sweep.py"


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
