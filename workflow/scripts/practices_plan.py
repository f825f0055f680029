"""Which corruptions of the practice grid the prompt set takes (checkpoint ``practices_plan``).

Each corruption checks the prompt set as it would before a sweep (its own ``check``: e.g. resample
needs another prompt of each prompt's template and length); a refusal is recorded with its message,
and the practice benchmark lists that corruption's practices as not defined instead of running them.
"""

from patchbench.atomic import write_json
from patchbench.errors import InputError
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    prompts = PromptSet.from_parquet(sm.input.prompts)
    verdicts = {}
    for cell in sm.params.cells:
        try:
            cell.sweep_spec.intervention.check(
                prompts, cell.reference(), where=f"prompt set {prompts.task!r}"
            )
            verdicts[cell.corruption] = ""
        except InputError as err:
            verdicts[cell.corruption] = str(err)
        log.info("corruption %s: %s", cell.corruption, verdicts[cell.corruption] or "defined")
    write_json(
        sm.output[0],
        {"model": sm.wildcards.model, "experiment": sm.wildcards.experiment, "corruptions": verdicts},
    )
