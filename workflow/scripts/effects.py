"""Every metric's effect per component, and the paper's 2-SD detection (rule ``effects``)."""

from patchbench.detection import detect
from patchbench.frames import read_frame, write_frame
from patchbench.metrics import effects
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    raw = read_frame(sm.input[0])
    meta = raw.attrs["patchbench"]
    metrics = ("prob", "logit_diff", "kl") + (("stolfo",) if meta["task"].startswith("arithmetic") else ())
    eff = effects(raw, metrics=metrics)
    for key in ("model", "task", "corruption", "site", "window", "method"):
        eff[key] = meta[key]
    eff = detect(eff)
    write_frame(eff, sm.output[0], meta)
    log.info("%d components x %d metrics; detected: %s", eff["component"].nunique(), len(metrics),
             eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"))
