"""Cache the clean run's activations for every site a (model, task) is patched at (rule ``clean_cache``)."""

from safetensors.torch import save_file

from patchbench.engine.cache import clean_cache
from patchbench.models import load_model
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    model = load_model(sm.params.model)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    cache = clean_cache(model, prompts, list(sm.params.sites))
    save_file({k: v.detach().cpu().contiguous() for k, v in cache.items()}, sm.output[0])
    log.info("cached %d clean activations for %s", len(cache), sorted(sm.params.sites))
