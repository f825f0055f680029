"""Writes this directory under TransformerLens 3.9 (HookedTransformer): a tiny toy checkpoint in the
format ``patchbench.toy.model.save_toy`` wrote before issue #16 (``config.json`` + the whole
HookedTransformer state dict, buffers included), and its logits in float32 and float64.

    PYTHONPATH=<a TL-3.9 checkout>/src python make.py .   # with transformer-lens==3.9.*
"""

import json
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file

warnings.simplefilter("ignore")
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

out = Path(sys.argv[1])
kw = {"model_name": "tl39-toy", "n_layers": 2, "d_model": 32, "n_heads": 4, "d_head": 8, "n_ctx": 16,
      "d_vocab": 64, "act_fn": "gelu", "normalization_type": "LN", "positional_embedding_type": "standard",
      "attn_only": False, "seed": 0, "tokenizer_prepends_bos": False, "default_prepend_bos": True,
      "original_architecture": "patchbench-toy", "d_mlp": 64}  # fmt: skip
torch.manual_seed(0)
model = HookedTransformer(HookedTransformerConfig(**kw, device="cpu"))
with torch.no_grad():  # every weight random and non-trivial (LayerNorm weights and biases included)
    for p in model.parameters():
        p.copy_(torch.randn_like(p) * 0.3)
(out / "config.json").write_text(json.dumps(kw, indent=1) + "\n")
state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
ref = {"tokens": torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))}
for dtype in (torch.float32, torch.float64):
    m = HookedTransformer(HookedTransformerConfig(**kw, device="cpu", dtype=dtype))
    m.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    m.eval()
    with torch.no_grad():
        ref[f"logits_{str(dtype).split('.')[-1]}"] = m(ref["tokens"])
save_file(ref, str(out / "reference.safetensors"), metadata={"transformer_lens": version("transformer-lens")})
print(version("transformer-lens"), {k: tuple(v.shape) for k, v in ref.items()})
