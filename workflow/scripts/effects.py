"""Every metric's effect per component, and the paper's 2-SD detection (rule ``effects``)."""

from patchbench.detection import detect
from patchbench.metrics import effects, metrics_for
from patchbench.rawframe import metadata, read_frame, write_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    raw = read_frame(sm.input[0])
    metrics = metrics_for(metadata(raw)["task"])
    eff = detect(effects(raw, metrics=metrics))
    write_frame(eff, sm.output[0])
    log.info(
        "%d components x %d metrics; detected: %s",
        eff["component"].nunique(),
        len(metrics),
        eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"),
    )
