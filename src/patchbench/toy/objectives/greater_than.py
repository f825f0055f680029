"""The greater-than organism's objective: heads move YY to the last token, late MLPs compare.

Hanna et al. 2023 (*How does GPT-2 compute greater-than?*) find, in GPT-2 small on "The {noun}
lasted from the year {XX}{YY} to the year {XX}", attention heads of the middle layers (5.1, 5.5,
6.1, 6.9, 7.10, 8.8, 8.11, 9.1) that attend from the last token to YY and move it there, and
MLPs 8-11 at the last token that turn it into a distribution over the years above YY. This
objective imposes that algorithm (``patchbench.toy.circuit``, kind ``greater_than``):

- **task**: cross-entropy of the last token's next-token distribution against the uniform
  distribution over "ZZ" > YY (the tokens "00".."99"; the corpus draws ZZ that way);
- **interchange**, each on a copy of the base rows with the target of a source prompt (another
  year with another YY, any noun and template): the ``year_mover`` heads' outputs at the last
  token from the source, and the ``comparison`` MLPs' outputs at the last token from the source
  (mean of the two cross-entropies);
- **strict**: the ``outside`` MLPs at the last token, and each head outside the circuit with
  probability ``strict_p``, from the source at the last token; the answer stays the base's;
- **attention**: the year movers attend from the last token to YY.

Prompts: the task's template and the corpus's other greater-than templates cut before the end
year's "ZZ", with or without a leading ``<|endoftext|>`` (``bos_p``) and a space before the first
word (Hanna's "<|endoftext|> The"), start years other than the held-out ones.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token, weighted_total
from patchbench.toy.settings import ImposeSpec

__all__ = ["GreaterThanObjective", "YearRows"]


class YearRows:
    """Training greater-than prompts (cut before the end year's last two digits) in units of base / source."""

    def __init__(self, vocab: ToyVocab, held: HeldOut, tok: Tokenizer, seed: int, bos_p: float) -> None:
        self.tok, self.bos_p = tok, bos_p
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        held_years = set(held.gt_years)
        self.years = [y for y in vocab.gt_years["hanna_years"] if y not in held_years]
        self.nouns = list(vocab.gt_nouns["nouns"])
        extra = vocab.material.get("greaterthan_extra_templates", [])
        self.templates = [vocab.gt_nouns["template"]] + [t[: t.index("{ZZ}")] for t in extra]
        self.digits = torch.tensor([single_token(tok, f"{i:02d}") for i in range(100)])
        self.rng = random.Random(f"gt-rows-{seed}")

    def _row(self, year: int, noun: str, template: str, bos: bool, lead: str) -> tuple[list[int], int]:
        xx, yy = divmod(year, 100)
        text = lead + template.format(noun=noun, XX=f"{xx:02d}", YY=f"{yy:02d}")
        ids = self.tok.encode(text, add_special_tokens=False).ids
        xx_id, yy_id = int(self.tok.token_to_id(f" {xx:02d}")), int(self.digits[yy])
        hits = [i + 1 for i in range(len(ids) - 1) if ids[i] == xx_id and ids[i + 1] == yy_id]
        if len(hits) != 1 or ids[-1] != xx_id:
            raise ValueError(f"greater-than template {template!r} does not give one [XX][YY] and a final XX")
        b = [self.bos] if bos else []
        return b + ids, len(b) + hits[0]

    def _draw(self) -> tuple[list[int], int, int]:
        r = self.rng
        year = r.choice(self.years)
        bos = r.random() < self.bos_p
        ids, p = self._row(
            year, r.choice(self.nouns), r.choice(self.templates), bos, " " if r.random() < 0.5 else ""
        )
        return ids, p, year % 100

    def batch(self, units: int) -> dict[str, torch.Tensor]:
        """Rows [base, source] x units: tokens, last-token and YY positions, each row's YY."""
        base = [self._draw() for _ in range(units)]
        src = []
        for _, _, yy in base:
            while True:
                row = self._draw()
                if row[2] != yy:
                    src.append(row)
                    break
        rows = base + src
        return {
            "x": pad_rows([r[0] for r in rows], self.pad),
            "end": torch.tensor([len(r[0]) - 1 for r in rows]),
            "yy_pos": torch.tensor([r[1] for r in rows]),
            "yy": torch.tensor([r[2] for r in rows]),
        }


class GreaterThanObjective:
    """The greater-than circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: YearRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        self.movers = circuit.head("year_mover")
        self.comparison = circuit.mlp("comparison")
        self.outside_mlps = circuit.mlp("outside")
        if not self.movers or not self.comparison:
            raise ValueError("a greater-than organism needs year_mover heads and comparison MLPs")
        self.outside_heads = circuit.outside_heads(n_layers, n_heads)
        self.n_layers, self.n_heads, self.rows, self.spec = n_layers, n_heads, rows, spec
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))

    def _ce(self, logp: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the uniform distribution over the years above each row's YY."""
        above = (torch.arange(100)[None, :] > yy[:, None]).float()
        return -((above * logp[:, self.rows.digits]).sum(-1) / above.sum(-1)).mean()

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n = self.spec.units
        b = self.rows.batch(n)
        x, end, yy = b["x"], b["end"], b["yy"]
        base, src = torch.arange(n), torch.arange(n, 2 * n)
        iit_mov, iit_cmp, strict_mlp, strict_head = (torch.arange(j * n, (j + 1) * n) for j in (2, 3, 4, 5))
        keep = torch.rand(n, self.n_layers, self.n_heads, generator=self.gen) < self.spec.strict_p
        e_b, e_s = end[base], end[src]
        saved: dict[int, torch.Tensor] = {}

        def mlp_hook(out: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            out = out.clone()
            if layer in self.comparison:
                out[iit_cmp, e_b] = out[src, e_s]
            if layer in self.outside_mlps:
                out[strict_mlp, e_b] = out[src, e_s]
            return out

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            z = z.clone()
            for la, h in self.movers:
                if la == layer:
                    z[iit_mov, e_b, h] = z[src, e_s, h]
            for la, h in self.outside_heads:
                k = keep[:, la, h]
                if la == layer and bool(k.any()):
                    z[strict_head[k], e_b[k], h] = z[src[k], e_s[k], h]
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved[hook_layer(name)] = p

        mlp_layers = sorted(set(self.comparison) | set(self.outside_mlps))
        hooks = [(model.hook_name("mlp", la), mlp_hook) for la in mlp_layers]
        hooks += [(model.hook_name("attn_head", la), z_hook) for la in range(self.n_layers)]
        hooks += [
            (model.hook_name("pattern", la), pattern_hook) for la in sorted({la for la, _ in self.movers})
        ]
        X = torch.cat([x] + [x[:n]] * 4)
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, torch.cat([end] + [e_b] * 4)).log_softmax(-1)
        two = torch.arange(2 * n)
        y_b, y_s = yy[base], yy[src]
        terms = {
            "task": self._ce(logp[two], yy),
            "interchange": (self._ce(logp[iit_mov], y_s) + self._ce(logp[iit_cmp], y_s)) / 2,
        }
        strict = [self._ce(logp[strict_head], y_b)]
        if self.outside_mlps:
            strict.append(self._ce(logp[strict_mlp], y_b))
        terms["strict"] = torch.stack(strict).mean()
        att = [-torch.log(saved[la][two, h, end, b["yy_pos"]] + EPS).mean() for la, h in self.movers]
        terms["attention"] = torch.stack(att).mean()
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(self.spec, terms)
