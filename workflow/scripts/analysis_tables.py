"""Tables 1-5 for one model (rules ``table<N>_model``): effects files -> CSV, Markdown, LaTeX."""

from patchbench.analysis import tables
from patchbench.analysis.frames import read_effects
from patchbench.analysis.ioi_classes import read_classes
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
CAPTIONS = {
    "table1": "Table 1: IOI head classes found (found / total) per corruption x metric",
    "table2": "Table 2: docstring (head, position) detections",
    "table3": "Table 3: greater-than, detected heads",
    "table4": "Table 4: IOI with S1 and IO corrupted, detected heads",
    "table5": "Table 5: IOI (S2 corrupted), detected heads",
}
with rule_log(sm.log[0]) as log:
    name, model = sm.params.table, sm.wildcards.model
    effects = read_effects(list(sm.input.effects))
    if name == "table1":
        classes = read_classes(sm.input.classes)
        source = sm.params.source
        table = tables.table1(effects, classes, model=model)
        log.info(
            "Table 1 classes for %s from %s: %s", model, source, classes.groupby("class").size().to_dict()
        )
        caption = f"{CAPTIONS[name]}; {model}, classes from {source}"
    elif name == "table2":
        prompts = PromptSet.from_parquet(sm.input.prompts)
        c_def = tables.constant_position(prompts.positions["C_def"], "C_def")
        last = tables.constant_position(prompts.answer_pos, "last")
        table = tables.table2(effects, c_def_pos=c_def, last_pos=last, model=model)
        caption = f"{CAPTIONS[name]}; {model}, C_def at position {c_def}, last position {last}"
    else:
        table = getattr(tables, name)(effects, model=model)
        caption = f"{CAPTIONS[name]}; {model}"
    tables.write_table(table, [sm.output.csv, sm.output.md, sm.output.tex], caption=caption)
    log.info("%s for %s:\n%s", name, model, table.to_string(index=False))
