"""Online acquisition of the paper suite's data files (pinned upstream URL + sha256).

One rule per file of the data mirror, generated from patchbench.upstream.SOURCES (the rule is
named by the source's ``rule``). Each downloads its upstream file(s) at a commit-pinned URL,
checks the upstream sha256 where it is pinned, derives the mirror's content (lists in upstream
Python files are read with `ast`, never executed) and checks that the result is byte for byte
the mirror's file (sha256) before writing it.

The files land in the config's `data_mirror` (data/mirror by default, the paper config's
data_dir). Offline, point data_dir at an existing mirror (../shared/data) instead: nothing here
then runs.

    snakemake --cores 1 data_mirror        # every file
"""

from pathlib import Path

from patchbench.tasks import TASKS
from patchbench.upstream import SOURCES


def mirror_file(relpath):
    return str(Path(config["data_mirror"], relpath))


def task_data_files(wildcards):
    """The data files the prompts rule of a task reads (inputs, so that data rules run first and an
    edited file reruns what depends on it): a built-in task's vocabulary, or a task's own file of
    prompt pairs (`tasks.<name>.file`)."""
    file = config["tasks"][wildcards.task].get("file")
    if file is not None:
        return [file]
    return [str(Path(config["data_dir"], f)) for f in TASKS[wildcards.task].files]


rule data_mirror:
    localrule: True
    input:
        [mirror_file(relpath) for relpath in SOURCES],


def _data_rule(source):
    """The rule that fetches one file of the data mirror."""

    rule:
        name:
            source.rule
        localrule: True
        output:
            mirror_file(source.relpath),
        log:
            LOG("data", f"{source.rule.removeprefix('data_')}.log"),
        params:
            relpath=source.relpath,
        shell:
            "python -m patchbench.upstream {params.relpath} {output} > {log} 2>&1"


for _source in SOURCES.values():
    _data_rule(_source)
