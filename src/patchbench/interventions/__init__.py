"""Interventions are data, not branches: the registries of what a sweep can patch and how.

Three registries describe every intervention a sweep can make; everything else (the config
schema's enums and patterns, the workflow's wildcard patterns, the CLI's choices, labels and
table orders, both engines' masks and runs, the :class:`~patchbench.cell.Cell` and its
fingerprint) reads them, so no list of sites, corruptions or directions is written anywhere else:

* :mod:`.sites`: each patch site's hook template and axes (heads, positions, windows,
  key-value heads on grouped-query models), :data:`.sites.SITES`;
* :mod:`.corruptions`: how each corruption makes the corrupted run (token-level: the ids and
  embedding noise the run reads; activation-level: which activations are replaced, and by
  what), which settings enter its fingerprint, its label and its metadata; one module each,
  :data:`.corruptions.NAMES`;
* :mod:`.directions`: denoising (clean activations into the corrupted run) and noising
  (corrupted activations into the clean run), and how each signs the metrics.

The registries of names import neither torch nor the config, so the schema and the workflow
read them at no cost.
"""

from __future__ import annotations

__all__ = ["key_pattern"]


def key_pattern() -> str:
    """A regular expression matching every intervention key (:func:`.directions.key`): a corruption
    value, suffixed for a non-default direction. The workflow's ``{corruption}`` wildcard uses it."""
    from patchbench.interventions import corruptions, directions

    suffixes = "|".join(d.suffix for d in directions.DIRECTIONS.values() if d.suffix)
    return f"{corruptions.ID_PATTERN}(?:{suffixes})?"
