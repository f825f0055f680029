"""The docstring organism's objective: the argument after the last documented one, by induction.

Heimersheim & Janiak 2023 (*A circuit for Python docstrings in a 4-layer attention-only
transformer*) find, in attn-only-4l on prompts that document a function's arguments in order and
stop at the next ``:param``, that layer-3 heads (3.0, 3.6) attend from the final ``:param`` to
C_def in the signature and copy it; their queries carry the last documented argument (B), moved
to the final token by 1.4, and their keys carry, at each signature argument, the argument before
it (2.0 and 1.2, fed by the layer-0 head 0.5): an induction-like search for "the argument after
B" (ACDC's manual docstring circuit: 0.5, 1.2, 1.4, 2.0, 3.0, 3.6). This objective imposes that
algorithm on an attention-only model (``patchbench.toy.circuit``, kind ``docstring``): a
``previous_token`` head gives every token the one before it (so the last documented argument is
"the token after ``param``"), a ``previous_argument`` head gives each signature argument the
argument before it (two tokens back, past the comma), the ``last_param`` heads move B to the last
token, and the ``argument_mover`` heads match B against the signature's previous-argument keys.

- **task**: cross-entropy of the next argument at the final ``:param`` (the token ``param``);
- **interchange**, on copies of the base rows: the ``argument_mover`` heads' outputs at the last
  token from another docstring prompt, and the answer must become that prompt's answer (the
  movers carry the copied name); the ``last_param`` heads' outputs at the last token from a
  prompt with the same signature that documents another run of arguments, and the answer must
  become the base signature's argument after that prompt's last documented one (the heads carry
  B) (mean of the two cross-entropies);
- **strict**: each head outside the circuit, with probability ``strict_p``, at every position from
  a resampled prompt of the same shape (other names and words); the answer stays the base's;
- **attention**: ``previous_token`` heads attend from every token to the one before it,
  ``previous_argument`` heads from each signature argument to the argument before it,
  ``last_param`` heads from the last token to the last documented argument, ``argument_mover``
  heads from the last token to the answer's position in the signature.

Prompts follow the corpus's docstrings (ACDC's "rest" style): ``self`` and 3-6 arguments,
a one-to-three-word description, a run of consecutively documented arguments with one- or
two-word descriptions, cut after the next ``:param``; no adjacent argument pair that the corpus
holds out occurs; ``<|endoftext|>`` first in a share ``bos_p`` of rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut, ToyVocab
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token, weighted_total
from patchbench.toy.settings import ImposeSpec

__all__ = ["DocRows", "DocstringObjective"]


@dataclass(frozen=True)
class _Shape:
    n_args: int
    start: int  # first documented argument
    stop: int  # the answer's index: documented are args[start:stop]
    desc: int  # words in the method description
    arg_desc: tuple[int, ...]  # words per documented argument's description


class DocRows:
    """Training docstring prompts (cut after the next ``:param``) in units of base / argument source /
    last-documented source / resample (module docstring)."""

    def __init__(self, vocab: ToyVocab, held: HeldOut, tok: Tokenizer, seed: int, bos_p: float) -> None:
        self.tok, self.bos_p = tok, bos_p
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        self.names = list(vocab.doc_words["variable_names"])
        self.nouns = [w for w in vocab.doc_words["common_single_token_nouns"] if w not in set(self.names)]
        self.verbs = list(vocab.material["docstring_function_verbs"])
        self.held = set(held.doc_pairs)
        self.name_id = {n: single_token(tok, " " + n) for n in self.names}
        self.self_id = single_token(tok, "self")
        self.rng = random.Random(f"doc-rows-{seed}")

    def _shape(self) -> _Shape:
        r = self.rng
        n = r.randint(3, 6)
        start = r.randint(0, n - 2)
        stop = r.randint(start + 1, n - 1)
        return _Shape(n, start, stop, r.randint(1, 3), tuple(r.randint(1, 2) for _ in range(stop - start)))

    def _args(self, n: int) -> list[str]:
        while True:
            args = self.rng.sample(self.names, n)
            if not any((p, q) in self.held for p, q in zip(args, args[1:], strict=False)):
                return args

    def _row(self, shape: _Shape, args: list[str], bos: bool) -> dict:
        r = self.rng
        fname = r.choice([v for v in self.verbs + self.names if v not in args])
        sig = ", ".join(["self", *args])
        desc = " ".join(r.choice(self.nouns) for _ in range(shape.desc))
        params = "".join(
            f"\n    :param {a}: {' '.join(r.choice(self.nouns) for _ in range(k))}"
            for a, k in zip(args[shape.start : shape.stop], shape.arg_desc, strict=True)
        )
        text = f'\ndef {fname}({sig}):\n    """{desc}\n{params}\n    :param'
        ids = ([self.bos] if bos else []) + self.tok.encode(text, add_special_tokens=False).ids
        where = {a: [i for i, t in enumerate(ids) if t == self.name_id[a]] for a in args}
        return {
            "ids": ids,
            "sig": [where[a][0] for a in args],
            "self": ids.index(self.self_id),
            "last_doc": where[args[shape.stop - 1]][-1],
            "answer": self.name_id[args[shape.stop]],
            "args": args,
            "shape": shape,
        }

    def batch(self, units: int) -> dict:
        """Rows [base, argument source, last-documented source, resample] x units, their last
        positions, the answer's signature position, the last documented argument's position, the
        answer ids, and the interchange answer of the last-documented source."""
        r = self.rng
        parts: list[list[dict]] = [[], [], [], []]
        last_answer = []
        for _ in range(units):
            shape = self._shape()
            args = self._args(shape.n_args)
            bos = r.random() < self.bos_p
            base = self._row(shape, args, bos)
            parts[0].append(base)
            while True:
                src_shape = self._shape()
                src = self._row(src_shape, self._args(src_shape.n_args), r.random() < self.bos_p)
                if src["answer"] != base["answer"]:
                    break
            parts[1].append(src)
            # the same signature documenting another run: the last documented argument differs
            stop = r.choice([s for s in range(1, shape.n_args) if s != shape.stop])
            start = r.randint(0, stop - 1)
            other = _Shape(
                shape.n_args, start, stop, shape.desc, tuple(r.randint(1, 2) for _ in range(stop - start))
            )
            parts[2].append(self._row(other, args, r.random() < self.bos_p))
            last_answer.append(self.name_id[args[stop]])
            parts[3].append(self._row(shape, self._args(shape.n_args), bos))
        rows = [row for part in parts for row in part]
        x = pad_rows([row["ids"] for row in rows], self.pad)
        prev_arg = torch.zeros(x.shape, dtype=torch.long)  # at each signature argument: the one before
        for i, row in enumerate(rows):
            before = [row["self"]] + row["sig"][:-1]
            prev_arg[i, row["sig"]] = torch.tensor(before)
        return {
            "x": x,
            "prev_arg": prev_arg,
            "end": torch.tensor([len(row["ids"]) - 1 for row in rows]),
            "answer_pos": torch.tensor([row["sig"][row["shape"].stop] for row in rows]),
            "last_doc": torch.tensor([row["last_doc"] for row in rows]),
            "answer": torch.tensor([row["answer"] for row in rows]),
            "last_answer": torch.tensor(last_answer),
        }


class DocstringObjective:
    """The docstring circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: DocRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        self.prev, self.last = circuit.head("previous_token"), circuit.head("last_param")
        self.prev_arg = circuit.head("previous_argument")
        self.movers = circuit.head("argument_mover")
        if not self.movers or not self.last:
            raise ValueError("a docstring organism needs argument_mover and last_param heads")
        self.outside = circuit.outside_heads(n_layers, n_heads)
        self.n_layers, self.n_heads, self.rows, self.spec = n_layers, n_heads, rows, spec
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n = self.spec.units
        b = self.rows.batch(n)
        x, end = b["x"], b["end"]
        base, arg_src, last_src, resample = (torch.arange(j * n, (j + 1) * n) for j in range(4))
        iit_arg, iit_last, strict = (torch.arange(j * n, (j + 1) * n) for j in (4, 5, 6))
        keep = torch.rand(n, self.n_layers, self.n_heads, generator=self.gen) < self.spec.strict_p
        e_b = end[base]
        width = x.shape[1]
        saved: dict[int, torch.Tensor] = {}

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            z = z.clone()
            for la, h in self.movers:
                if la == layer:
                    z[iit_arg, e_b, h] = z[arg_src, end[arg_src], h]
            for la, h in self.last:
                if la == layer:
                    z[iit_last, e_b, h] = z[last_src, end[last_src], h]
            for la, h in self.outside:
                k = keep[:, la, h]
                if la == layer and bool(k.any()):
                    z[strict[k], :width, h] = z[resample[k], :width, h]
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved[hook_layer(name)] = p

        hooks = [(model.hook_name("attn_head", la), z_hook) for la in range(self.n_layers)]
        classes = self.prev + self.prev_arg + self.last + self.movers
        hooks += [(model.hook_name("pattern", la), pattern_hook) for la in sorted({la for la, _ in classes})]
        X = torch.cat([x] + [x[:n]] * 3)
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, torch.cat([end] + [e_b] * 3)).log_softmax(-1)
        ans = b["answer"]

        def ce(r: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return -logp[r, target].mean()

        four = torch.arange(4 * n)
        terms = {
            "task": ce(four, ans),
            "interchange": (ce(iit_arg, ans[arg_src]) + ce(iit_last, b["last_answer"])) / 2,
            "strict": ce(strict, ans[base]),
        }
        att = []
        for la, h in self.last:
            att.append(-torch.log(saved[la][four, h, end, b["last_doc"]] + EPS).mean())
        for la, h in self.movers:
            att.append(-torch.log(saved[la][four, h, end, b["answer_pos"]] + EPS).mean())
        qs = torch.arange(1, width)
        valid = (x[:, 1:] != self.rows.pad).float()
        for la, h in self.prev:
            prev = saved[la][four, h][:, qs, qs - 1]
            att.append(-(torch.log(prev + EPS) * valid).sum() / valid.sum())
        sig = b["prev_arg"] > 0
        for la, h in self.prev_arg:
            pat = saved[la][four, h]  # rows x queries x keys
            on = pat.gather(2, b["prev_arg"][:, :, None])[:, :, 0]
            att.append(-(torch.log(on + EPS) * sig).sum() / sig.sum())
        terms["attention"] = torch.stack(att).mean()
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(self.spec, terms)
