"""The exact patching engine: activation patching, batched and prefix-reusing.

Activation patching runs the model on a corrupted input and replaces one activation (a *patch
target*: a head's output, an MLP layer's output over a window of layers, the residual stream at a
layer and position, ...) with its value from the clean run, then reads how far the output moves
back towards the clean answer. Done naively (TransformerLens's ``get_act_patch_*``), every target
costs a full forward pass over all prompts, and logits over every position.

This engine computes exactly the same numbers, faster:

* **Prefix reuse.** Patching something in layer L leaves layers < L as in the corrupted run. The
  corrupted run's residual stream (``blocks.L.hook_resid_pre`` for every L) is cached once per
  block of prompts; each patched run starts at its first patched layer on that cached residual
  (the blocks' hooks still fire, so patching is ordinary hooking).
* **Batching.** Targets x prompts share the batch dimension, chunked to ``memory_budget_mb`` and
  to a forward whose widest activation stays under 32 MiB (``budget.tokens_per_forward``). A
  chunk's targets may start at any layers: each target's rows join the forward at their own start
  layer, so the batch grows layer by layer and no row runs a layer before its own.
* **One generic patch.** A target is a boolean mask over the activation at one or more hook
  points; the hook returns ``torch.where(mask, clean[prompt], activation)``. Every site uses this
  one code path.
* **Head-output shortcut.** A head's output (``hook_z``) enters the residual stream only through
  ``W_O``: a head target at layer L leaves that layer's attention input, keys and values as in the
  corrupted run, so its patched layer is the corrupted attention output plus the patched heads'
  change ``(z_clean - z_corr) @ W_O[h]``, at the patched positions only; the rest of that block
  runs on those (row, position) entries alone and the forward resumes at layer L + 1. Only for
  head outputs (head values are mixed by the attention pattern: no shortcut), and only where
  :meth:`patchbench.lm.LM.head_shortcut` confirms the model's attention output is linear in ``z``.
* **Answer-position unembedding.** Only ``answer_pos`` of each row goes through ``ln_final`` and
  the unembedding; the raw value columns of every metric come from that single forward.

Corruptions (:mod:`patchbench.corruption`): STR reads the corrupted prompts; GN adds seeded noise
to ``hook_embed`` of the clean prompts. Patched runs start from the cached corrupted residual, so
they carry exactly the corrupted run's noise draw. Every sweep checks two identities on its first
block of prompts, one row per answer position (:mod:`.sanity`); with a checkpoint directory it resumes from its finished chunks
(:mod:`.checkpoint`), bitwise identically.

The engine runs the model through the pieces of the model interface, :class:`patchbench.lm.LM`
(embed with the noise point, blocks ``L..`` on a residual stream with hooks, final norm and
unembedding at one position): the interface is the only code that touches TransformerLens.

Modules, one job each (import them directly; this package imports nothing eagerly):

==============  ==========================================================================
``budget``      how many rows of a forward fit the memory budget, and the token cap of a forward
``heap``        glibc's heap keeps freed memory (no page faults for the next chunk's tensors)
``readout``     a run's raw value columns from its answer-position logits
``cache``       the clean cache (clean activations, answer logits, tokens)
``patch``       the generic patch: masks, clean sources, one patched forward per target chunk
``sanity``      the two identities every sweep checks
``checkpoint``  finished chunks on disk, and the fingerprint that names a sweep
``sweep``       :func:`~patchbench.engine.sweep.run_sweep`: one sweep as a raw frame
``patterns``    attention patterns of chosen heads in the clean / corrupted / patched runs (§3.2)
==============  ==========================================================================

Attribution patching (:mod:`patchbench.attribution`) reuses ``budget``, ``readout``, ``cache``
and ``patch``; both engines' frames are built by :mod:`patchbench.rawframe`.
"""
