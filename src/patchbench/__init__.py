"""patchbench: activation patching done right.

Reproduces Zhang & Nanda, "Towards Best Practices of Activation Patching in Language Models:
Metrics and Methods" (ICLR 2024), and runs the same corruption x metric x window grid on any
TransformerLens model and task.

Modules (one concept each; the map is ``docs/architecture.md``): ``config`` (the validated
config), ``cell`` (a sweep cell: paths, spec, fingerprint), ``layout`` (output paths),
``prompts`` (the PromptSet contract), ``models`` (loading), ``tasks`` (prompt generators),
``corruption`` (STR / GN), ``engine`` (exact patching), ``attribution``, ``rawframe`` (the raw and
effects frames), ``metrics``, ``detection``, ``analysis`` (tables, figures, claims), ``toy`` (the
offline suite). Submodules are imported lazily by their users so that ``import patchbench`` stays cheap.

The notebook API (:mod:`patchbench.api`) is reachable from the top: ``patchbench.grid(model, prompts,
sites=...)`` (a tidy effects frame of the whole grid), ``patchbench.sweeps``,
``patchbench.effects_table`` and ``patchbench.robustness``.
"""

from typing import Any

__version__ = "0.1.0"

#: Names of :mod:`patchbench.api` available as ``patchbench.<name>`` (imported on first use).
API = ("grid", "sweeps", "effects_table", "robustness")


def __getattr__(name: str) -> Any:
    if name in API:
        from patchbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'patchbench' has no attribute {name!r}")
