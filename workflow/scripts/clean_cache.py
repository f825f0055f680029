"""Cache the clean run's activations for every site a (model, task) is patched at (rule ``clean_cache``)."""

from patchbench.engine.cache import cache_fingerprint, clean_cache, save_cache
from patchbench.models import load_model
from patchbench.preflight import check_model_dir, check_prompts
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec = sm.params.model
    check_model_dir(spec)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts)
    check_prompts(prompts, model)
    cache = clean_cache(model, prompts, list(sm.params.sites), memory_budget_mb=spec.memory_budget_mb)
    fingerprint = cache_fingerprint(model, prompts)
    save_cache(cache, sm.output[0], fingerprint, job_fingerprint=sm.params.fingerprint)
    log.info(
        "cached %d clean activations for %s (fingerprint %s)",
        len(cache),
        sorted(sm.params.sites),
        fingerprint,
    )
