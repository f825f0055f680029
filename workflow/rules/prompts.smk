"""Prompt sets: generated with each model's tokenizer, then filtered to the prompts it gets right."""


rule prompts:
    input:
        tokenizer=tokenizer_files,
        data=task_data_files,
    output:
        LAYOUT.prompts("{model}", "{task}", unfiltered=True),
    log:
        LOG("prompts/{model}/{task}.all.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: model_spec(w.model),
        task=lambda w: config["tasks"][w.task],
        data_dir=config["data_dir"],
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/prompts_build.py"


rule filter_correct:
    input:
        prompts=LAYOUT.prompts("{model}", "{task}", unfiltered=True),
        weights=weight_files,
    output:
        prompts=LAYOUT.prompts("{model}", "{task}"),
        accuracy=LAYOUT.accuracy("{model}", "{task}"),
    log:
        LOG("prompts/{model}/{task}.filter.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: model_spec(w.model),
        enabled=config["filter_correct"],
        min_prompts=config["min_prompts"],
    threads: model_threads
    resources:
        **model_job_resources(),
    script:
        "../scripts/prompts_filter.py"


rule all_prompts:
    """Target: every configured task's prompt set for every model that runs it (before filtering)."""
    input:
        sorted({LAYOUT.prompts(c.model, c.task, unfiltered=True) for c in all_cells()}),
