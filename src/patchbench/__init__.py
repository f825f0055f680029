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
"""

__version__ = "0.1.0"
