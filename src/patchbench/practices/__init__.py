"""The ground-truth benchmark of patching practices: which corruption, direction, metric, window,
method and detection rule recover a circuit known by construction.

Zhang & Nanda's contribution is advice (prefer STR to Gaussian noise; the logit difference over
probability for negative components; read sliding-window peaks with care), argued on models whose
circuits nobody knows. On model organisms (``models/organisms/*``, trained with a circuit imposed
and written to ``circuit.json``) the advice can be measured: every practice of a grid is swept,
its detections scored against the circuit, with intervals over prompts and spread over seeds.

Modules, one concept each:

=============  ====================================================================================
``grid``       the grid from the config: practices, organisms and seeds, the sweeps (Cells) they read,
               what is not defined and why, which sweeps are new
``rules``      the detection rules: the paper's 2 SD, top-k, the sign-flip permutation test
``scores``     precision, recall, F1 (per class; negative components sign-aware), AUROC
``benchmark``  one organism and seed scored from its raw sweeps under prompt resamples; seeds pooled
``advice``     the paper's recommendations as comparisons of practices, and the verdict rule
``report``     the tables (CSV, Markdown), the figure and the summary
``build``      the workflow job: every plan scored, judged and written
=============  ====================================================================================

The workflow's ``practices`` target (``workflow/rules/practices.smk``) runs it; config: the
``practices`` section (config/README.md).
"""
