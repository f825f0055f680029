"""Keep the prompts the model answers correctly and record its accuracy (rule ``filter_correct``)."""

from patchbench.atomic import write_json
from patchbench.filtering import check_enough, filter_correct
from patchbench.models import load_model
from patchbench.preflight import check_model_dir, check_prompts
from patchbench.runlog import rule_log
from patchbench.tasks import load_prompts

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec = sm.params.model
    check_model_dir(spec)
    model = load_model(spec)
    prompts = load_prompts(sm.input.prompts)
    check_prompts(prompts, model)
    kept, stats = filter_correct(model, prompts)
    if not sm.params.enabled:
        kept = prompts
    stats.update(model=spec.name, task=sm.wildcards.task, filtered=bool(sm.params.enabled), n_kept=len(kept))
    log.info("accuracy of %s on %s: %s", spec.name, sm.wildcards.task, stats)
    check_enough(
        len(kept), len(prompts), sm.params.min_prompts, sm.params.enabled, spec.name, sm.wildcards.task
    )
    kept.to_parquet(sm.output.prompts, job_fingerprint=sm.params.fingerprint)
    write_json(sm.output.accuracy, stats)
