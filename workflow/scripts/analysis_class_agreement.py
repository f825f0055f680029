"""Beside Table 1 of a model organism (rule ``ioi_class_agreement``): the automatic classifier's
IOI classes against the organism's circuit.json, per class, with precision and recall."""

from patchbench.analysis.ioi_classes import class_agreement, read_classes
from patchbench.analysis.tables import write_table
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    table = class_agreement(read_classes(sm.input.truth), read_classes(sm.input.classifier))
    caption = (
        f"IOI head classes of {sm.wildcards.model}: circuit.json (the truth, which Table 1 counts) and "
        "the automatic classifier (reported only)"
    )
    write_table(table, [sm.output.csv, sm.output.md], caption=caption)
    log.info("classifier vs circuit.json for %s:\n%s", sm.wildcards.model, table.to_string(index=False))
