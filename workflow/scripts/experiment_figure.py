"""The generic figure of one experiment on one model (rule ``experiment_figure``): effects -> PNG + PDF."""

from patchbench import plot
from patchbench.analysis.frames import read_effects
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    effects = read_effects(list(sm.input.effects))
    circuit = plot.load_circuit(sm.input.circuit[0] if sm.input.circuit else None, sm.params.task)
    fig = plot.experiment_figure(effects, circuit=circuit)
    log.info("%s on %s: %s figure of %d rows, known circuit %s", sm.wildcards.experiment, sm.wildcards.model,
             plot.figure_kind(effects), len(effects), circuit)  # fmt: skip
    plot.save(fig, [sm.output.png, sm.output.pdf])
