"""Build one task's PromptSet with one model's tokenizer (rule ``prompts``): a built-in task's generator,
or a task's own file of prompt pairs."""

from pathlib import Path

from patchbench.models import load_tokenizer
from patchbench.preflight import check_model_dir
from patchbench.runlog import rule_log
from patchbench.tasks import build_configured

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec, task = sm.params.model, sm.params.task
    check_model_dir(spec, weights=False)
    prompts = build_configured(sm.wildcards.task, task, load_tokenizer(spec), Path(sm.params.data_dir))
    prompts.to_parquet(sm.output[0])
    log.info("%s: %d prompts for %s -> %s", sm.wildcards.task, len(prompts), spec.name, sm.output[0])
