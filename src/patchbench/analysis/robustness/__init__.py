"""Localization robustness: which findings survive the choice of corruption, metric and window.

Zhang & Nanda's message is that what activation patching localizes depends on methodological
choices. One *experiment* (one model, task, site and position mode) is swept over a grid of
*cells*, (corruption, metric, window); this package says, per component, whether its detection
holds across that grid, with uncertainty:

1. **Bootstrap over prompts** (:func:`bootstrap_grid`). B resamples of the prompts (seeded;
   multinomial counts, one count matrix shared by every cell of the experiment, so cells are
   compared on the same resamples). Each resample recomputes every metric from the raw per-prompt
   frame with :func:`patchbench.metrics.aggregate`, i.e. the normalised logit difference's
   denominator is recomputed per resample (it is a ratio of means). Per component and cell: a
   percentile confidence interval, and the *detection probability*: the share of resamples in
   which the paper's 2-SD rule (:func:`patchbench.detection.detect_signs`, applied to all
   components of the plot in that resample) detects it, per sign. Effects frames without their raw
   frames get a normal approximation instead (:func:`normal_grid`, effect ± SD/√n, components
   independent), marked ``ci_method = normal``.
2. **Status per cell** (:func:`cell_summary`): ``positive`` / ``negative`` when that sign's
   detection probability is at least ``robust`` (0.9), ``absent`` when the probability of either
   sign is at most ``unstable`` (0.1), else ``uncertain``.
3. **Verdict per component** (:func:`verdicts`): ``robust`` (the same sign, reliably, in every
   cell), ``unstable`` (uncertain in some cell), ``not detected`` (absent everywhere), else
   ``depends on <axes>``: the smallest set of grid axes (corruption, metric, window) whose values
   determine the component's status (e.g. detected under STR with every metric and window, absent
   under GN: ``depends on corruption``).
4. **Agreement between cells** (:func:`pairwise_agreement`): for every pair of cells, the Jaccard
   index of their detections (component and sign; 1 when neither detects anything) and the
   Spearman correlation of their effects over components, each with its bootstrap interval.
5. **The paper's explanations** (:func:`explanations`), attached where they apply, with numbers:
   §4.2, a negative component that another metric detects but probability misses while the
   probability floor −P_*(answer) lies above, or within ``floor_room`` SD below, the negative
   threshold μ − 2 SD (a probability effect cannot fall below −P_*(answer)); §3, a component
   detected under GN but by no metric under STR (GN's off-distribution inputs, §3.2); §5, a
   sliding-window peak larger than the sum of the single-layer effects over the same layers
   (ratio of the peaks as the paper computes it, its bootstrap interval above 1).
6. **Known circuit** (:func:`score_circuit`): precision and recall of each cell's detections
   against a circuit known for the model (Wang et al.'s GPT-2-small IOI heads; organisms whose
   circuit is known by construction), per class, with bootstrap intervals.

Everything is a pure function from frames to frames; :mod:`patchbench.analysis.robustness_report`
writes the tables, the one-page summaries and the report's summary page, and
:mod:`patchbench.analysis.robustness_figure` draws the figure.

Modules, one concept each (the public names are re-exported here):

=================  =======================================================================
``grid``           the settings, the grid of effects under prompt resamples (1)
``verdict``        the status per cell and the verdict per component (2, 3)
``cell_agreement`` agreement between cells (4)
``explain``        the paper's explanations (5)
``known_circuit``  known circuits and the precision / recall of detections against them (6)
=================  =======================================================================
"""

from patchbench.analysis.robustness.cell_agreement import (
    average_ranks,
    jaccard_matrix,
    pairwise_agreement,
    pearson_matrix,
)
from patchbench.analysis.robustness.explain import (
    EXPLANATION_COLUMNS,
    FLOOR_ROOM,
    explanations,
    floor_hides_negatives,
)
from patchbench.analysis.robustness.grid import (
    AXES,
    GridDraws,
    RobustnessError,
    RobustnessSettings,
    bootstrap_grid,
    cell_label,
    normal_grid,
)
from patchbench.analysis.robustness.known_circuit import (
    CIRCUIT_TASKS,
    OUTSIDE_ROLE,
    KnownCircuit,
    read_known_circuit,
    score_circuit,
)
from patchbench.analysis.robustness.verdict import (
    CELL_COLUMNS,
    STATUS_CODES,
    VERDICT_COLUMNS,
    VERDICT_ORDER,
    cell_summary,
    verdict_of,
    verdicts,
)

__all__ = [
    "AXES",
    "CELL_COLUMNS",
    "CIRCUIT_TASKS",
    "EXPLANATION_COLUMNS",
    "FLOOR_ROOM",
    "OUTSIDE_ROLE",
    "STATUS_CODES",
    "VERDICT_COLUMNS",
    "VERDICT_ORDER",
    "GridDraws",
    "KnownCircuit",
    "RobustnessError",
    "RobustnessSettings",
    "average_ranks",
    "bootstrap_grid",
    "cell_label",
    "cell_summary",
    "explanations",
    "floor_hides_negatives",
    "jaccard_matrix",
    "normal_grid",
    "pairwise_agreement",
    "pearson_matrix",
    "read_known_circuit",
    "score_circuit",
    "verdict_of",
    "verdicts",
]
