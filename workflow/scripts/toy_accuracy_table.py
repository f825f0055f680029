"""Snakemake wrapper: one table (csv + markdown) of the toy models' held-out accuracy."""

import logging

from patchbench.toy.evaluate import accuracy_table, markdown_table

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
table = accuracy_table(
    list(snakemake.input.accuracy), list(snakemake.input.summary), snakemake.params.patched
)
table.to_csv(snakemake.output.csv, index=False)
with open(snakemake.output.md, "w") as f:
    f.write(markdown_table(table))
logging.info("toy accuracy table:\n%s", markdown_table(table))
