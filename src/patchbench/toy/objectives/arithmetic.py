"""The arithmetic organism's objective: heads carry the operands to the last token, MLPs compute.

Stolfo et al. 2023 (*A mechanistic interpretation of arithmetic reasoning in language models
using causal mediation analysis*) find, in GPT-J and other models on two-operand queries, that
attention at the last token moves the operands' (and operator's) information from their
positions, and that MLPs of the late layers at the last token compute the result and write it
(their Fig. 2-4: the indirect effect of the MLPs at the last token peaks late; attention's effect
concentrates at the operand positions' attention into the last token). This objective imposes
that algorithm (``patchbench.toy.circuit``, kind ``arithmetic``):

- **task**: cross-entropy of the result token at the last token ("=");
- **interchange**, on copies of the base rows: the ``x_mover`` / ``y_mover`` heads' outputs at the
  last token from a source query of the same operator (each operand's movers patched or not, at
  least one: a random non-empty subset), and the answer must become the result of the operands
  the movers now carry (rows whose mixed result leaves the task's range are skipped); the
  ``result`` MLPs' outputs at the last token from the source, and the answer must become the
  source's result (mean of the two cross-entropies);
- **strict**: the ``outside`` MLPs at the last token, and each head outside the circuit with
  probability ``strict_p``, from the source at the last token; the answer stays the base's;
- **attention**: x movers attend from the last token to X3, y movers to Y3.

Prompts: two shots and a query in the corpus's "{x} {op} {y} =" format (Stolfo's template),
operands of the corpus's training pairs (the held-out queries never occur), with a leading
``<|endoftext|>`` in a share ``bos_p`` of rows.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import ARITH_OPS, HeldOut, ToyVocab, arith_pairs, arith_result
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token, weighted_total
from patchbench.toy.settings import ImposeSpec

__all__ = ["ArithmeticObjective", "ArithRows"]


class ArithRows:
    """Training two-shot arithmetic prompts in units of base / source (same operator)."""

    def __init__(self, vocab: ToyVocab, held: HeldOut, tok: Tokenizer, seed: int, bos_p: float) -> None:
        self.tok, self.bos_p = tok, bos_p
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        held_set = set(held.arith)
        self.pairs = {op: [p for p in arith_pairs(vocab, op) if (op, *p) not in held_set] for op in ARITH_OPS}
        self.templates = {op: vocab.arith["templates"][op][-1] for op in ARITH_OPS}
        self.max_result = int(vocab.arith.get("max_result", 199))
        self.rng = random.Random(f"arith-rows-{seed}")

    def result_id(self, value: int) -> int:
        return single_token(self.tok, f" {value}")

    def _row(self, op: str, x: int, y: int, bos: bool) -> tuple[list[int], int, int]:
        r, t = self.rng, self.templates[op]
        shots = ""
        for _ in range(2):
            sx, sy = r.choice(self.pairs[op])
            shots += t.format(x=sx, y=sy) + f" {arith_result(op, sx, sy)}\n"
        enc = lambda text: self.tok.encode(text, add_special_tokens=False).ids  # noqa: E731
        head, query = enc(shots), enc(t.format(x=x, y=y))
        ids = head + query
        px, py = len(head), len(head) + 2  # the query is [x, " op", " y", " ="]
        if (
            len(query) != 4
            or ids[px] != single_token(self.tok, str(x))
            or ids[py] != single_token(self.tok, f" {y}")
        ):
            raise ValueError(f"arithmetic template {t!r} does not give single-token operands here")
        b = [self.bos] if bos else []
        return b + ids, len(b) + px, len(b) + py

    def valid(self, op: str, x: int, y: int) -> bool:
        return 0 <= arith_result(op, x, y) <= self.max_result

    def batch(self, units: int) -> dict:
        """Rows [base, source] x units: tokens, last-token / X3 / Y3 positions, operands, operator."""
        r = self.rng
        rows, ops, xs, ys = [], [], [], []
        for _ in range(units):
            ops.append(r.choice(ARITH_OPS))
        for part in range(2):
            for i in range(units):
                op = ops[i]
                while True:
                    x, y = r.choice(self.pairs[op])
                    if part == 0 or arith_result(op, x, y) != arith_result(op, xs[i], ys[i]):
                        break
                rows.append(self._row(op, x, y, r.random() < self.bos_p))
                xs.append(x)
                ys.append(y)
        return {
            "x": pad_rows([row[0] for row in rows], self.pad),
            "end": torch.tensor([len(row[0]) - 1 for row in rows]),
            "px": torch.tensor([row[1] for row in rows]),
            "py": torch.tensor([row[2] for row in rows]),
            "ops": ops + ops,
            "xs": xs,
            "ys": ys,
        }


class ArithmeticObjective:
    """The arithmetic circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: ArithRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        self.x_movers, self.y_movers = circuit.head("x_mover"), circuit.head("y_mover")
        self.result = circuit.mlp("result")
        self.outside_mlps = circuit.mlp("outside")
        if not self.x_movers or not self.y_movers or not self.result:
            raise ValueError("an arithmetic organism needs x_mover and y_mover heads and result MLPs")
        self.outside_heads = circuit.outside_heads(n_layers, n_heads)
        self.n_layers, self.n_heads, self.rows, self.spec = n_layers, n_heads, rows, spec
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n, rows = self.spec.units, self.rows
        b = rows.batch(n)
        x, end = b["x"], b["end"]
        base, src = torch.arange(n), torch.arange(n, 2 * n)
        iit_mov, iit_res, strict_mlp, strict_head = (torch.arange(j * n, (j + 1) * n) for j in (2, 3, 4, 5))
        # which operand's movers each interchange row takes from the source: a non-empty subset
        code = torch.randint(1, 4, (n,), generator=self.gen)
        take_x, take_y = code & 1 == 1, code & 2 == 2
        keep = torch.rand(n, self.n_layers, self.n_heads, generator=self.gen) < self.spec.strict_p
        e_b, e_s = end[base], end[src]
        saved: dict[int, torch.Tensor] = {}

        def mlp_hook(out: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            out = out.clone()
            if layer in self.result:
                out[iit_res, e_b] = out[src, e_s]
            if layer in self.outside_mlps:
                out[strict_mlp, e_b] = out[src, e_s]
            return out

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            z = z.clone()
            for movers, take in ((self.x_movers, take_x), (self.y_movers, take_y)):
                for la, h in movers:
                    if la == layer and bool(take.any()):
                        z[iit_mov[take], e_b[take], h] = z[src[take], e_s[take], h]
            for la, h in self.outside_heads:
                k = keep[:, la, h]
                if la == layer and bool(k.any()):
                    z[strict_head[k], e_b[k], h] = z[src[k], e_s[k], h]
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved[hook_layer(name)] = p

        mlp_layers = sorted(set(self.result) | set(self.outside_mlps))
        hooks = [(model.hook_name("mlp", la), mlp_hook) for la in mlp_layers]
        hooks += [(model.hook_name("attn_head", la), z_hook) for la in range(self.n_layers)]
        movers = self.x_movers + self.y_movers
        hooks += [(model.hook_name("pattern", la), pattern_hook) for la in sorted({la for la, _ in movers})]
        X = torch.cat([x] + [x[:n]] * 4)
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, torch.cat([end] + [e_b] * 4)).log_softmax(-1)

        ops, xs, ys = b["ops"], b["xs"], b["ys"]
        answer = torch.tensor([rows.result_id(arith_result(ops[i], xs[i], ys[i])) for i in range(2 * n)])
        mixed, ok = [], []
        for i in range(n):
            mx = xs[n + i] if take_x[i] else xs[i]
            my = ys[n + i] if take_y[i] else ys[i]
            ok.append(rows.valid(ops[i], mx, my))
            mixed.append(rows.result_id(arith_result(ops[i], mx, my)) if ok[-1] else answer[i])
        ok_t, mixed_t = torch.tensor(ok), torch.tensor(mixed)

        def ce(r: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return -logp[r, target].mean()

        interchange = [ce(iit_res, answer[src])]
        if bool(ok_t.any()):
            interchange.append(ce(iit_mov[ok_t], mixed_t[ok_t]))
        strict = [ce(strict_head, answer[base])]
        if self.outside_mlps:
            strict.append(ce(strict_mlp, answer[base]))
        two = torch.arange(2 * n)
        att = [-torch.log(saved[la][two, h, end, b["px"]] + EPS).mean() for la, h in self.x_movers]
        att += [-torch.log(saved[la][two, h, end, b["py"]] + EPS).mean() for la, h in self.y_movers]
        return {
            "task": ce(two, answer),
            "interchange": torch.stack(interchange).mean(),
            "strict": torch.stack(strict).mean(),
            "attention": torch.stack(att).mean(),
        }

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(self.spec, terms)
