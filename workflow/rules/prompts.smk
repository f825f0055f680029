"""Prompt sets: generated with each model's tokenizer, then filtered to the prompts it gets right."""


rule prompts:
    input:
        tokenizer=tokenizer_files,
        data=task_data_files,
    output:
        R("prompts/{model}/{task}.all.parquet"),
    log:
        LOG("prompts/{model}/{task}.all.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: config["models"][w.model],
        task=lambda w: config["tasks"][w.task],
        data_dir=config["data_dir"],
        results_dir=RESULTS,
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/prompts_build.py"


rule filter_correct:
    input:
        prompts=R("prompts/{model}/{task}.all.parquet"),
        weights=weight_files,
    output:
        prompts=R("prompts/{model}/{task}.parquet"),
        accuracy=R("prompts/{model}/{task}.accuracy.json"),
    log:
        LOG("prompts/{model}/{task}.filter.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
        enabled=config["filter_correct"],
        min_prompts=config["min_prompts"],
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 30),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/prompts_filter.py"


rule all_prompts:
    """Target: every configured task's prompt set for every model that runs it (before filtering)."""
    input:
        sorted(
            {prompts_path(m, e["task"], unfiltered=True) for e in EXPERIMENTS.values() for m in e["models"]}
        ),
