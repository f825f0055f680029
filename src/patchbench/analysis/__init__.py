"""Paper outputs: the tables, figures and numeric claims of Zhang & Nanda (ICLR 2024).

Everything here is a pure function from DataFrames (the effects frame and the raw sweep frame of
``docs/architecture.md``, plus a few small frames defined in these modules) to files, so that the
workflow scripts stay thin and every output can be rebuilt from the run's parquet files alone.

Modules (one concept each):

- ``frames``      reading, validating and selecting effects / sweep frames; head labels.
- ``style``       the one matplotlib / seaborn style and the figure writer (PNG + PDF).
- ``positions``   ROME's token-position categories and per-category MLP effects (§4.1).
- ``ioi_classes`` Wang et al.'s published GPT-2-small head classes and the automatic classifier.
- ``tables``      Tables 1-5 as CSV, Markdown and LaTeX.
- ``figures``     the figure set.
- ``claims``      ``claims.csv``: the paper's quantitative statements checked on this run.
- ``robustness``  which localizations survive the choice of corruption, metric and window:
  bootstrap over prompts, detection probabilities, verdicts, agreement, the paper's explanations,
  known-circuit scores (``robustness_report`` writes its tables and pages, ``robustness_figure``
  draws its figure).
- ``report_page`` the Snakemake report's front page from every experiment's robustness facts.

Submodules are imported by their users (``from patchbench.analysis import tables``); importing
the package itself stays cheap and does not import matplotlib.
"""
