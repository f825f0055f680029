"""Patching: a clean-activation cache per (model, task), a sweep job per (model, experiment), effects.

A sweep job runs every cell (corruption x window) of one experiment on one model: the model and the
clean cache load once, and each cell still writes its own raw frame, log and resumable chunks
(`<cell>.chunks`). Loading is what a job pays once: Python start-up with TransformerLens takes
~10 s, against < 1 s of patching per toy cell, and a 6B model's weights take minutes. Each
experiment gets its own rule, `sweep_<experiment>`; its params carry the job's Cells
(patchbench.cell), from which the script takes everything it runs and writes.

The cache and every raw frame record their fingerprint (a raw frame: its Cell's and the model's
weights, ``cell_fingerprint``); the stamp input reruns a job when one of them no longer matches.
"""

CACHE_FINGERPRINT = fingerprint(("models", "{model}"), model_files="weights")


rule clean_cache:
    input:
        prompts=LAYOUT.prompts("{model}", "{task}"),
        weights=weight_files,
        stamp=stamped(
            "clean_cache", model_task_jobs(), each_output([LAYOUT.cache("{model}", "{task}")], CACHE_FINGERPRINT)
        ),
    output:
        LAYOUT.cache("{model}", "{task}"),
    log:
        LOG("cache/{model}/{task}.log"),
    priority: lambda w: long_sweep_priority(w.model, w.task)
    params:
        model=lambda w: model_spec(w.model),
        sites=lambda w: sites_for(w.model, w.task),
        fingerprint=CACHE_FINGERPRINT,
    threads: model_threads
    resources:
        **model_job_resources(),
    script:
        "../scripts/clean_cache.py"


def _sweep_rule(name):
    """The rule that runs experiment ``name``'s sweep cells for one model (wildcard ``model``)."""
    exp = EXPERIMENTS[name]
    patterns = experiment_cells(config, name, model="{model}")
    records = lambda w: {c.raw_path: cell_fingerprint(c) for c in experiment_cells(config, name, model=w.model)}

    rule:
        name:
            f"sweep_{name}"
        input:
            prompts=LAYOUT.prompts("{model}", exp["task"]),
            cache=LAYOUT.cache("{model}", exp["task"]),
            weights=weight_files,
            references=lambda w: sorted({c.reference_path for c in experiment_cells(config, name, model=w.model)} - {None}),
            stamp=stamped(f"sweep_{name}", [dict(model=m) for m in exp["models"]], records),
        output:
            [c.raw_path for c in patterns],
        log:
            [c.log_path for c in patterns],
        wildcard_constraints:
            model=one_of(exp["models"]),
        priority: lambda w: long_sweep_priority(w.model, exp["task"])
        params:
            cells=lambda w: experiment_cells(config, name, model=w.model),
            records=records,
            fingerprint=fingerprint(cells=lambda w: experiment_cells(config, name, model=w.model)),
        threads: model_threads
        resources:
            **model_job_resources(len(patterns)),
        script:
            "../scripts/sweep.py"


for _name in EXPERIMENTS:
    _sweep_rule(_name)


rule effects:
    input:
        CELL.raw_path,
    output:
        CELL.effects_path,
    log:
        CELL.effects_log_path,
    params:
        fingerprint=fingerprint(),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/effects.py"
