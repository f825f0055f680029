"""Prompt sets: generated with each model's tokenizer, then filtered to the prompts it gets right.

Both jobs record their fingerprint in the prompt set they write; the stamp input reruns them when
it no longer matches (the tokenizer's or weights' files, the task's data files, the config).
"""

PROMPTS_FINGERPRINT = fingerprint(
    ("models", "{model}"),
    ("tasks", "{task}"),
    "data_dir",
    model_files="tokenizer",
    files=lambda w: task_files(config, w.task),
)
FILTER_FINGERPRINT = fingerprint(("models", "{model}"), "filter_correct", "min_prompts", model_files="weights")


rule prompts:
    input:
        tokenizer=tokenizer_files,
        data=task_data_files,
        stamp=stamped(
            "prompts",
            model_task_jobs(),
            each_output([LAYOUT.prompts("{model}", "{task}", unfiltered=True)], PROMPTS_FINGERPRINT),
        ),
    output:
        LAYOUT.prompts("{model}", "{task}", unfiltered=True),
    log:
        LOG("prompts/{model}/{task}.all.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: model_spec(w.model),
        task=lambda w: config["tasks"][w.task],
        data_dir=config["data_dir"],
        fingerprint=PROMPTS_FINGERPRINT,
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/prompts_build.py"


rule filter_correct:
    input:
        prompts=LAYOUT.prompts("{model}", "{task}", unfiltered=True),
        weights=weight_files,
        stamp=stamped(
            "filter_correct", model_task_jobs(), each_output([LAYOUT.prompts("{model}", "{task}")], FILTER_FINGERPRINT)
        ),
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
        fingerprint=FILTER_FINGERPRINT,
    threads: model_threads
    resources:
        **model_job_resources(),
    script:
        "../scripts/prompts_filter.py"


rule all_prompts:
    """Target: every configured task's prompt set for every model that runs it (before filtering)."""
    input:
        sorted({LAYOUT.prompts(c.model, c.task, unfiltered=True) for c in all_cells()}),
