"""The model interface's checks: the self-check at load and the head-output shortcut's check.

:meth:`~ChecksMixin.self_check` compares block-by-block and suffix runs with the model's own full
forward and checks every site hook; :meth:`~ChecksMixin.head_shortcut` measures once per model
whether a head-output patch may skip its layer's attention exactly. Both are methods of
:class:`patchbench.lm.LM` (this mixin), run through its forward pieces.
"""

from __future__ import annotations

from typing import Any

import torch

from patchbench.lm.kv import KVCapture
from patchbench.lm.shape import LMShape, ModelInterfaceError, _Tol


class ChecksMixin:
    """The checks of :class:`patchbench.lm.LM` (they run its forward pieces)."""

    bridge: Any
    shape: LMShape

    def head_shortcut(self) -> bool:
        """Whether a head-output (``hook_z``) patch at a layer can skip that layer's attention exactly:
        on every layer, the attention module's output is ``sum_h z_h @ W_O[h]`` plus a constant bias,
        and :meth:`run_block_with_attention` on gathered single positions, given that output,
        reproduces the block's own output. Measured once on random tokens (float64 rounding-level
        tolerances of :class:`_Tol`); False sends the engine to the full recompute of the layer."""
        ok = getattr(self, "_head_shortcut", None)
        if ok is None:
            ok = self._head_shortcut = self._check_head_shortcut()[0]
        return ok

    def _check_head_shortcut(
        self, length: int = 7, batch: int = 2, seed: int = 1
    ) -> tuple[bool, dict[str, float]]:
        s = self.shape
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, min(s.d_vocab, 1000), (batch, length), generator=g).to(s.device)
        tol = _Tol.of(s.dtype).rel
        got: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, name: str) -> None:
            got[name] = act.detach()

        layers = range(s.n_layers)
        names = [n for i in layers for n in (self.hook_name("attn_head", i), self.hook_name("attn_out", i))]
        if not all(self.has_hook(n) for n in names):
            return False, {}
        keep: list[torch.Tensor] = []
        with torch.no_grad(), self.hooks([(n, grab) for n in names]):
            final = self.run_blocks(self.embed(tokens), 0, keep=keep)
        keep.append(final)
        gaps = {"linear": 0.0, "block": 0.0}
        with torch.no_grad():
            for i in layers:
                z, out = got[self.hook_name("attn_head", i)], got[self.hook_name("attn_out", i)]
                if z.shape[-2] != s.n_heads or out.shape != keep[i].shape:
                    return False, gaps
                lin = torch.einsum("bphk,hkd->bpd", z, self.W_O(i).to(z.dtype))
                rest = out - lin  # the output bias: the same vector at every row and position
                scale = float(out.abs().max()) or 1.0
                gaps["linear"] = max(gaps["linear"], float((rest - rest[:1, :1]).abs().max()) / scale)
                r = keep[i].reshape(-1, 1, s.d_model)
                a = out.reshape(-1, 1, s.d_model)
                mine = self.run_block_with_attention(i, r, a).reshape(keep[i + 1].shape)
                scale = float(keep[i + 1].abs().max()) or 1.0
                gaps["block"] = max(gaps["block"], float((mine - keep[i + 1]).abs().max()) / scale)
        return all(v <= tol for v in gaps.values()), gaps

    # ------------------------------------------------------------------------------ self-check

    def self_check(self, length: int = 10, batch: int = 2, seed: int = 0) -> dict[str, float]:
        """Check this interface against the model's own full forward; raise :class:`ModelInterfaceError` if not.

        Block-by-block logits (every position) equal the bridge's forward; a suffix-only run on
        captured keys and values equals it too (where supported); every site's hook fires once,
        under its requested name, with the expected head count. Returns the measured max
        differences, relative to the largest logit.
        """
        b, s = self.bridge, self.shape
        g = torch.Generator().manual_seed(seed)
        length = min(length, int(getattr(b.cfg, "n_ctx", length) or length))
        tokens = torch.randint(0, min(s.d_vocab, 1000), (batch, length), generator=g).to(s.device)
        tol = _Tol.of(s.dtype).rel
        out: dict[str, float] = {}
        with torch.no_grad():
            full = b(tokens, return_type="logits")
            scale = float(full.abs().max()) or 1.0
            r0 = self.embed(tokens)
            cap = KVCapture() if s.kv_reuse else None
            resid = self.run_blocks(r0, 0, capture=cap)
            mine = torch.stack(
                [self.unembed_at(resid, torch.full((batch,), p, dtype=torch.long)) for p in range(length)], 1
            )
            out["blocks"] = float((mine - full).abs().max()) / scale
            if cap is not None:
                p = length // 2
                suf = self.run_blocks(r0[:, p:], 0, past=cap.prefix(p))
                last = torch.full((batch,), length - 1 - p, dtype=torch.long)
                out["suffix"] = float((self.unembed_at(suf, last) - full[:, -1]).abs().max()) / scale
        bad = {k: v for k, v in out.items() if not v <= tol}
        if bad:
            raise ModelInterfaceError(
                f"{s.architecture}: the interface's forward pieces disagree with the model's own forward "
                f"(relative max difference {bad}, tolerance {tol:g}); results through this interface would be "
                "silently wrong. Check the transformer-lens / transformers versions against pyproject.toml."
            )
        self._check_hooks(tokens)
        return out

    def _check_hooks(self, tokens: torch.Tensor) -> None:
        s = self.shape
        seen: dict[str, list[tuple[int, ...]]] = {}

        def rec(act: torch.Tensor, name: str) -> None:
            seen.setdefault(name, []).append(tuple(act.shape))

        layers = sorted({0, s.n_layers - 1})
        names = [
            self.hook_name(site, lay)
            for site in ("attn_head", "head_v", "mlp", "resid_pre")
            for lay in layers
        ]
        names = [n for n in names if self.has_hook(n)]
        with torch.no_grad(), self.hooks([(n, rec) for n in names]):
            self.run_blocks(self.embed(tokens), 0)
        for n in names:
            shapes = seen.get(n, [])
            if len(shapes) != 1:
                raise ModelInterfaceError(
                    f"hook {n} fired {len(shapes)} times in one forward (expected once)"
                )
            if n.endswith(("hook_z", "hook_v")):
                heads = self.site_heads("head_v" if n.endswith("hook_v") else "attn_head")
                if shapes[0][2:] != (heads, s.d_head):
                    raise ModelInterfaceError(
                        f"hook {n} has shape {shapes[0]}, expected [batch, pos, {heads}, {s.d_head}]"
                    )
