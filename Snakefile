"""patchbench: the corruption x metric x window grid of Zhang & Nanda (ICLR 2024).

    snakemake --cores 2                              # embedded default (toy suite, offline)
    snakemake --cores 8 --configfile config/config.yaml   # paper suite (hub access or warm HF cache)
    snakemake --cores 2 table5                       # one table / figure by target name
    snakemake --cores 2 robustness                   # localization-robustness tables, figures, summary
    snakemake --cores 2 practices                    # the practice benchmark against the organisms' circuits
    snakemake --cores 2 all_seeds --config all_seeds=True  # everything, on every seed of the multi-seed models
"""

from snakemake.utils import min_version

from patchbench.config import read_yaml
from patchbench.errors import refusing

min_version("9.0")


# The embedded default, unless the command line names config files: those replace it rather
# than being merged into it (a merge would silently keep the demo's models and experiments).
# It is read strictly first, so that a YAML error names its line (Snakemake's loader does not).
if not workflow.overwrite_configfiles:
    with refusing("patchbench"):
        read_yaml("config/demo.yaml")

    configfile: "config/demo.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/practices.smk"


# `snakemake --report` opens on the robustness summary (each experiment's robust and fragile findings).
report: robustness_front_page()


rule all:
    default_target: True
    input:
        all_targets(),


if config["all_seeds"]:

    rule all_seeds:
        """Everything `all` builds, on every seed of the models that list `seeds`."""
        input:
            all_targets(),

else:

    rule all_seeds:
        """Without `--config all_seeds=True` the config holds seed 0 only: say how to run them all."""
        localrule: True
        shell:
            "echo 'all_seeds: run `snakemake --cores 2 all_seeds --config all_seeds=True` (every seed of "
            "the models that list `seeds`; config/README.md, all_seeds)' >&2; exit 1"
