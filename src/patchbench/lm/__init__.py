"""The model interface: the only code that touches TransformerLens's model classes.

The patching engine needs five things of a language model, and nothing else:

1. **embed** token ids into the residual stream entering block 0, with the GN noise point: noise
   is added to the token embeddings (the output of the model's own embedding layer, ``hook_embed``)
   before positional embeddings, as ROME's causal tracing does;
2. **run block i** on a residual stream, so a patched run can start at its first patched layer on
   a cached residual, with hooks at the patch sites firing;
3. **keys and values for suffix reuse**: capture the keys and values a run computes, and run a
   later forward on positions ``>= p`` only, attending to the captured keys and values of the
   positions ``< p``;
4. **final norm + unembedding at one position** per row;
5. the model's **raw token embeddings** (before any weight processing) for GN's sigma (ROME's
   ``collect_embedding_std``), and its shape: layers, heads, key-value heads, vocabulary, dtype,
   device, the hook name of each patch site.

:class:`LM` provides them for TransformerLens 4's ``TransformerBridge`` in compatibility mode
(HookedTransformer hook names and, by default, HookedTransformer's weight processing), loaded
by one of three routes: :func:`load_transformers` (a Hugging Face hub name or a local
``save_pretrained`` directory, through ``TransformerBridge.boot_transformers``),
:func:`load_legacy` (TransformerLens-format repositories such as attn-only-4l, through
``boot_tl_legacy``) and :func:`load_native` (the project's own small models: a
``TransformerBridgeConfig`` and, optionally, HookedTransformer-format weights converted with
``convert_tl_checkpoint``).

TransformerLens 4.3 with transformers 5.24 has traps that silently give wrong numbers when a
model is run block by block; this package closes each one and :meth:`LM.self_check` (run at load)
fails loudly if one comes back:

* rotary models need ``position_embeddings`` passed to every block (without them RoPE is not
  applied): the interface computes them from the model's own rotary module at the right
  absolute positions, suffix offsets included;
* a block called by hand gets no attention mask; some attention implementations (GPT-J's) then
  attend to the future, and none applies a sliding window: the interface always passes an
  explicit causal (and, where the config says so, sliding-window) mask;
* the bridge ignores ``past_key_values`` (transformers 5.24 renamed the block argument to
  ``cache``): the interface owns key/value reuse with its own cache objects (:class:`KVCapture`,
  :class:`PrefixKV`) and counts every use, so a cache that is not read raises; TransformerLens's
  native attention (native and legacy routes) has no cache at all: the interface runs it with its
  own while a cache is in use (``_native_cached_forward``);
* ``blocks.L.hook_resid_pre`` reports its name as ``blocks.L.hook_in``: :meth:`LM.hooks` calls
  each hook function with the name it was registered under;
* final logit soft-capping (Gemma 2) is not part of the bridge's ``unembed``: :meth:`LM.unembed_at`
  applies it.

For the engine's head-output shortcut, :meth:`LM.run_block_with_attention` runs one block with its
attention module's output given (the attention itself not run) and :meth:`LM.head_shortcut` checks,
once per model, that this is exact there (attention output linear in ``hook_z`` through ``W_O``;
the rest of the block position by position); every route and test family passes it (GPT-2, GPT-J's
parallel block, Llama/Qwen2 grouped-query, Gemma 2's post-attention norms, native), and a model that
fails it gets the full recompute of the patched layer.

Beyond the engine's five pieces, :class:`LM` gives the few weights the analyses read (``W_U``,
``W_O(layer)``, the final norm's linear part for direct logit attribution, the attention scale
for AtP*'s QK fix) and, for the project's own (native) models, their weights in
HookedTransformer's format (:meth:`LM.ht_state_dict`, :meth:`LM.load_ht_state_dict`), which is
how toy checkpoints are stored and trained.

Modules, one concept each (everything public is re-exported here: ``from patchbench.lm import LM``):

=============  ===========================================================================
``shape``      :class:`LMShape`, :data:`SITE_HOOKS`, :class:`ModelInterfaceError`, tolerances
``kv``         key/value caches for suffix reuse (:class:`KVCapture`, :class:`PrefixKV`) and
               TransformerLens's native attention run with them
``model``      :class:`LM`: structure, hooks and the forward pieces the engine runs
``checks``     the self-check at load and the head-output shortcut's check (mixed into :class:`LM`)
``weights``    the weights the analyses read and HookedTransformer's weight format (mixed into
               :class:`LM`)
``loaders``    the three routes that build an :class:`LM` (``load_transformers``, ``load_legacy``,
               ``load_native``) and hub name resolution
=============  ===========================================================================
"""

from patchbench.lm.kv import KVCapture, PrefixKV
from patchbench.lm.loaders import (
    hub_tokenizer_name,
    is_legacy,
    load_hub,
    load_legacy,
    load_native,
    load_transformers,
    official_name,
)
from patchbench.lm.model import LM
from patchbench.lm.shape import SITE_HOOKS, LMShape, ModelInterfaceError

__all__ = [
    "SITE_HOOKS",
    "LMShape",
    "LM",
    "KVCapture",
    "PrefixKV",
    "ModelInterfaceError",
    "hub_tokenizer_name",
    "is_legacy",
    "load_hub",
    "load_legacy",
    "load_native",
    "load_transformers",
    "official_name",
]
