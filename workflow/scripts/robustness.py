"""One experiment's localization robustness on one model (rule ``robustness_experiment``)."""

from pathlib import Path

from patchbench.analysis.robustness import RobustnessSettings, bootstrap_grid, read_known_circuit
from patchbench.analysis.robustness_report import OUTPUT_SUFFIXES, analyse, write_experiment
from patchbench.frames import read_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    settings = RobustnessSettings(**sm.params.settings)
    raws = [read_frame(p) for p in sm.input.raws]
    grid = bootstrap_grid(raws, settings, names=list(sm.input.raws))
    circuit = read_known_circuit(sm.input.circuit[0], sm.params.task) if sm.input.circuit else None
    result = analyse(sm.wildcards.experiment, grid, circuit)
    stem = str(sm.output.verdicts)[: -len(OUTPUT_SUFFIXES["verdicts"])]
    written = write_experiment(result, stem, [sm.output.png, sm.output.pdf])
    expected = {k: Path(getattr(sm.output, k)) for k in OUTPUT_SUFFIXES}
    if written != expected:
        raise RuntimeError(f"robustness files {written} differ from the rule's outputs {expected}")
    log.info("%s", Path(sm.output.markdown).read_text())
