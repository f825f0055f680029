"""Keep the prompts the model answers correctly and record its accuracy (rule ``filter_correct``)."""

import json

from patchbench.filtering import filter_correct
from patchbench.models import load_model
from patchbench.runlog import rule_log
from patchbench.tasks import load_prompts

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec = sm.params.model
    model = load_model(spec)
    prompts = load_prompts(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    kept, stats = filter_correct(model, prompts)
    if not sm.params.enabled:
        kept = prompts
    stats.update(model=spec.name, task=sm.wildcards.task, filtered=bool(sm.params.enabled), n_kept=len(kept))
    log.info("accuracy of %s on %s: %s", spec.name, sm.wildcards.task, stats)
    if len(kept) < sm.params.min_prompts:
        raise RuntimeError(
            f"{spec.name} answers only {len(kept)} of {len(prompts)} {sm.wildcards.task} prompts correctly "
            f"(min_prompts={sm.params.min_prompts}); is the model trained / the right one? "
            "Set filter_correct: false to patch all prompts anyway."
        )
    kept.to_parquet(sm.output.prompts)
    with open(sm.output.accuracy, "w") as fh:
        json.dump(stats, fh, indent=2)
