"""Attribution sweeps of one experiment on one model (rules ``attribution_<experiment>``).

Per cell (patchbench.cell.Cell with method attribution, from the rule's params): the raw frame and
its effects with detection. The model, prompts and clean cache load once.
"""

from safetensors.torch import load_file

from patchbench.attribution import run_attribution
from patchbench.detection import detect
from patchbench.metrics import effects
from patchbench.models import load_model, resolve_device
from patchbench.prompts import PromptSet
from patchbench.rawframe import write_frame
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
cells = sm.params.cells
with rule_log(sm.log[0]) as log:
    spec = cells[0].model_spec
    model = load_model(spec)
    prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.cfg.d_vocab)
    clean = load_file(sm.input.cache, device=resolve_device(spec.device))
    log.info("%s loaded once for %d attribution cells of %s", spec.name, len(cells), cells[0].task)
for cell in cells:
    with rule_log(cell.log_path) as log:
        raw = run_attribution(model, prompts, cell.sweep_spec, clean, metrics=cell.metrics, qk_fix=cell.qk_fix,
                              name=cell.model, logger=log)  # fmt: skip
        write_frame(raw, cell.raw_path)
        eff = detect(effects(raw, metrics=cell.metrics), cell.detection_k)
        write_frame(eff, cell.effects_path)
        log.info(
            "attribution %s %s w%s: %d components x %d metrics; detected: %s", cell.corruption, cell.site,
            cell.window, eff["component"].nunique(), len(cell.metrics),
            eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"),
        )  # fmt: skip
