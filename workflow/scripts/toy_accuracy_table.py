"""Snakemake wrapper: one table (csv + markdown) of the toy models' held-out accuracy."""

from patchbench.toy.evaluate import accuracy_table, markdown_table

table = accuracy_table(list(snakemake.input.accuracy), list(snakemake.input.summary))
table.to_csv(snakemake.output.csv, index=False)
with open(snakemake.output.md, "w") as f:
    f.write(markdown_table(table))
