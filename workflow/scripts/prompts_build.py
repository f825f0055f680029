"""Build one task's PromptSet with one model's tokenizer (rule ``prompts``)."""

from pathlib import Path

from patchbench.models import load_tokenizer
from patchbench.preflight import check_model_dir
from patchbench.runlog import rule_log
from patchbench.tasks import build_task

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec, task = sm.params.model, sm.params.task
    check_model_dir(spec, weights=False)
    prompts = build_task(
        sm.wildcards.task,
        load_tokenizer(spec),
        Path(sm.params.data_dir),
        n_prompts=task["n_prompts"],
        seed=task["seed"],
        allow_fewer=task["allow_fewer"],
        **task["options"],
    )
    prompts.to_parquet(sm.output[0], job_fingerprint=sm.params.fingerprint)
    log.info("%s: %d prompts for %s -> %s", sm.wildcards.task, len(prompts), spec.name, sm.output[0])
