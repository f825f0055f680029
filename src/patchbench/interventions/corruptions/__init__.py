"""The corruption registry: one module per corruption, one line each in :data:`NAMES`.

========  ===========  ===================================================================
name      kind         the corrupted run of prompt i
========  ===========  ===================================================================
str       tokens       prompt i's STR counterpart (same length; its answer is the wrong answer r')
gn        tokens       prompt i with N(0, (nu sigma)^2) noise on its key tokens' embeddings (ROME)
resample  tokens       another prompt j of the same template and length (seeded pairing)
mean      activations  prompt i, the sweep's patched activations set to their mean over a
                       reference set (the task's prompts of i's template and length by default)
zero      activations  prompt i, the sweep's patched activations set to zero
========  ===========  ===================================================================

Each module holds one :class:`~patchbench.interventions.corruptions.base.Corruption` subclass as
``CORRUPTION``; adding a corruption is one new module here and its name in
:data:`.registry.NAMES`.

A config value names a corruption, optionally with settings that override its config section's
defaults: ``gn``, ``gn@nu=1``, ``gn@nu=9,n_samples=10``, ``resample@seed=2``, ``mean@reference=ioi_abc``
(:func:`parse`). The value itself is the corruption's *id*: it names the cell's files and its
frames' ``corruption``, so several variants of one corruption sit side by side in one experiment.
"""

from patchbench.interventions.corruptions.base import Corruption, CorruptionError
from patchbench.interventions.corruptions.registry import (
    ID_PATTERN,
    NAMES,
    corruption_class,
    label,
    order,
    paper,
    parse,
    resolve,
    section_schemas,
)

__all__ = [
    "ID_PATTERN",
    "NAMES",
    "Corruption",
    "CorruptionError",
    "corruption_class",
    "label",
    "order",
    "paper",
    "parse",
    "resolve",
    "section_schemas",
]
