"""``dtype: float64`` is float64 from loading on, processed or not (``models.<name>.processing``).

TransformerLens 4.3 processes weights in float32 (``ProcessWeights.process_weights`` casts every
floating tensor that is not float32 with ``.float()``) and its rotary attention bridges take the
softmax in float32; :mod:`patchbench.lm.loaders` keeps a float64 model in float64 through both.
Each stand-in (random weights, Hugging Face configs, ``tests/lm_models.py``) is loaded through
patchbench's real route (``source: local``) and compared with the raw Hugging Face model in
float64 (``attn_implementation="sdpa"``: float64 throughout).
"""

from __future__ import annotations

import pytest
import torch

from lm_models import save_hf
from patchbench.models import ModelSpec, load_model

#: stand-in -> save_hf overrides (tiny: the comparison is about precision, not size)
STAND_INS = {"gpt2-large": dict(n_layer=2, n_embd=64, n_head=4, n_positions=64), "llama": {}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("float64")
    return {shape: save_hf(shape, root / shape, dtype=torch.float64, **kw) for shape, kw in STAND_INS.items()}


def raw_log_probs(directory, tokens: torch.Tensor) -> torch.Tensor:
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="sdpa")
    with torch.no_grad():
        return torch.log_softmax(hf.eval()(tokens).logits, dim=-1)


@pytest.mark.parametrize("processing", [True, False], ids=["processed", "unprocessed"])
@pytest.mark.parametrize("shape", sorted(STAND_INS))
def test_float64_clean_log_probs_equal_the_raw_model_to_1e_12(shape, processing, saved, one_torch_thread):
    tokens = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    spec = ModelSpec(name=shape, source="local", path=str(saved[shape]), dtype="float64", device="cpu",
                     processing=processing)  # fmt: skip
    model = load_model(spec)
    assert model.shape.processed is processing and model.shape.dtype == torch.float64
    with torch.no_grad():
        ours = torch.log_softmax(model.logits(tokens), dim=-1)
    diff = float((ours - raw_log_probs(saved[shape], tokens)).abs().max())
    print(
        f"\n{shape} float64 {'processed' if processing else 'unprocessed'}: max |log p - raw HF log p| = {diff:.3g}"
    )
    assert diff <= 1e-12


def test_float32_loading_is_left_as_transformer_lens_does_it(saved, one_torch_thread):
    """The float64 guards change nothing else: Tensor.float casts again after loading, float32 processes as before."""
    cast = torch.Tensor.float
    model = load_model(
        ModelSpec(name="g", source="local", path=str(saved["gpt2-large"]), dtype="float32", device="cpu")
    )
    assert torch.Tensor.float is cast and torch.ones(2, dtype=torch.float64).float().dtype == torch.float32
    assert model.shape.dtype == torch.float32 and model.shape.processed


def test_processing_defaults_to_the_route():
    """null: hub and local models processed, toy models unprocessed (as trained); true / false as given."""
    assert ModelSpec(name="a", source="local", path="x").processed
    assert ModelSpec(name="a", source="hub").processed
    assert not ModelSpec(name="a", source="toy", path="x").processed
    assert not ModelSpec(name="a", source="local", path="x", processing=False).processed
    assert ModelSpec(name="a", source="toy", path="x", processing=True).processed
    entry = {"source": "local", "path": "x", "processing": False}
    assert ModelSpec.from_config("m", entry, "results").processing is False
