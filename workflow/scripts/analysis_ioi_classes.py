"""IOI head statistics and automatic classes for one model (rule ``ioi_head_classes``)."""

from patchbench.analysis.ioi_classes import classifier_inputs, classify_heads
from patchbench.models import load_model
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec = sm.params.model
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    stats = classifier_inputs(model, prompts)
    classes = classify_heads(stats)
    stats.to_csv(sm.output.stats, index=False)
    classes.to_csv(sm.output.classes, index=False)
    log.info(
        "%s: IOI head classes %s",
        spec.name,
        {
            c: [f"{la}.{h}" for la, h in zip(g["layer"], g["head"], strict=True)]
            for c, g in classes.groupby("class")
        },
    )
