"""Independent checks of the model organisms: one module per circuit kind, each with
``check(model, circuit, data_dir, ...) -> dict`` (``clean_p``, ``gn_ratio``, ``circuit_ablation``,
``backup_compensation``, ``details`` and ``failures``, the stated properties the organism misses),
computed by plain forward hooks (``patchbench.toy.checks.common``), never by the patching engine."""
