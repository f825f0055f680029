"""Every metric's effect per component, and the paper's 2-SD detection (rule ``effects``)."""

from patchbench.detection import detect
from patchbench.frames import read_frame, write_frame
from patchbench.metrics import effects, metrics_for
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    raw = read_frame(sm.input[0])
    meta = raw.attrs["patchbench"]
    metrics = metrics_for(meta["task"])
    eff = detect(effects(raw, metrics=metrics, method="exact"))
    write_frame(eff, sm.output[0], meta)
    log.info("%d components x %d metrics; detected: %s", eff["component"].nunique(), len(metrics),
             eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"))
