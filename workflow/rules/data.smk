"""Online acquisition of the paper suite's data files (pinned upstream URL + sha256).

One rule per file of the data mirror. Each downloads its upstream file(s) at a commit-pinned
URL, checks the upstream sha256 where it is pinned, derives the mirror's content (lists in
upstream Python files are read with `ast`, never executed) and checks that the result is byte
for byte the mirror's file (sha256) before writing it. See patchbench.data_sources.

The files land in DATA_MIRROR (default data/mirror, the paper config's data_dir; override with
the config key data_mirror). Offline, point data_dir at an existing mirror (../shared/data)
instead: nothing here then runs.

    snakemake --cores 1 data_mirror        # every file
"""

from pathlib import Path

from patchbench.data_sources import SOURCES
from patchbench.tasks import TASKS

DATA_MIRROR = config.get("data_mirror", "data/mirror")


def mirror_file(relpath):
    return str(Path(DATA_MIRROR, relpath))


def task_data_files(wildcards):
    """The data files the prompts rule of a task reads (inputs, so that data rules run first)."""
    return [str(Path(config["data_dir"], f)) for f in TASKS[wildcards.task].files]


localrules:
    data_mirror,
    data_ioi_vocab,
    data_greaterthan_nouns,
    data_greaterthan_years,
    data_docstring_words,
    data_arithmetic_templates,
    data_arithmetic_three_operand,
    data_rome_known_1000,
    data_gpt2_vocab,
    data_gpt2_merges,
    data_gpt2_tokenizer_config,
    data_gpt2_special_tokens_map,


rule data_mirror:
    input:
        [mirror_file(relpath) for relpath in SOURCES],


rule data_ioi_vocab:
    output:
        mirror_file("ioi/ioi_vocab.json"),
    log:
        LOG("data/ioi_vocab.log"),
    params:
        relpath="ioi/ioi_vocab.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_greaterthan_nouns:
    output:
        mirror_file("greater-than/greaterthan_nouns.json"),
    log:
        LOG("data/greaterthan_nouns.log"),
    params:
        relpath="greater-than/greaterthan_nouns.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_greaterthan_years:
    output:
        mirror_file("greater-than/greaterthan_years.json"),
    log:
        LOG("data/greaterthan_years.log"),
    params:
        relpath="greater-than/greaterthan_years.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_docstring_words:
    output:
        mirror_file("docstring/docstring_words.json"),
    log:
        LOG("data/docstring_words.log"),
    params:
        relpath="docstring/docstring_words.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_arithmetic_templates:
    output:
        mirror_file("arithmetic/arithmetic_templates.json"),
    log:
        LOG("data/arithmetic_templates.log"),
    params:
        relpath="arithmetic/arithmetic_templates.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_arithmetic_three_operand:
    output:
        mirror_file("arithmetic/three_operand_questions.json"),
    log:
        LOG("data/three_operand_questions.log"),
    params:
        relpath="arithmetic/three_operand_questions.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_rome_known_1000:
    output:
        mirror_file("rome/known_1000.json"),
    log:
        LOG("data/known_1000.log"),
    params:
        relpath="rome/known_1000.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_gpt2_vocab:
    output:
        mirror_file("gpt2-tokenizer/vocab.json"),
    log:
        LOG("data/gpt2_vocab.log"),
    params:
        relpath="gpt2-tokenizer/vocab.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_gpt2_merges:
    output:
        mirror_file("gpt2-tokenizer/merges.txt"),
    log:
        LOG("data/gpt2_merges.log"),
    params:
        relpath="gpt2-tokenizer/merges.txt",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_gpt2_tokenizer_config:
    output:
        mirror_file("gpt2-tokenizer/tokenizer_config.json"),
    log:
        LOG("data/gpt2_tokenizer_config.log"),
    params:
        relpath="gpt2-tokenizer/tokenizer_config.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"


rule data_gpt2_special_tokens_map:
    output:
        mirror_file("gpt2-tokenizer/special_tokens_map.json"),
    log:
        LOG("data/gpt2_special_tokens_map.log"),
    params:
        relpath="gpt2-tokenizer/special_tokens_map.json",
    shell:
        "python -m patchbench.data_sources {params.relpath} {output} > {log} 2>&1"
