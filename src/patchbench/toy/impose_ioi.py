"""The IOI circuit's imposing objective (Wang et al. 2023's algorithm, SIIT-style training terms).

A unit is three prompts of one template, cut before the final IO: clean (IO = A, S = B), swapped
(IO = B, S = A: the same positions with the names exchanged) and resampled (two other names).
Every term is a cross-entropy of the next token at END against the **IOI continuation
distribution of the organism's corpus**: the answer with probability ``answer_p``, the rest spread
evenly over the first tokens of the corpus's other endings (``ioi_other_endings``; "... gave a key
to the others"). With ``answer_p`` 1 this is the plain cross-entropy of the answer. Terms
(weights in ``ImposeSpec``):

- **task**: the answer IO on all three kinds of rows;
- **interchange** (IIT), each on a copy of the clean rows, the output must follow the high-level
  algorithm's counterfactual answer B (the clean S): the S-inhibition heads at every position
  from the swapped prompt (the name movers are told that S = A); with one duplicate-detection path
  only, also the duplicate-token and induction heads at S2 from the swapped prompt (the duplicated
  name is A);
- **redundancy** (two partly redundant duplicate-detection paths, duplicate-token and induction
  heads, each sufficient alone): one path mean-ablated at S2, the answer stays A (two rows: either
  path); one path mean-ablated and the other from the swapped prompt, the answer becomes B (two
  rows). Ablating the duplicate-token heads in these rows makes the induction path necessary, and
  the other way round; the four cross-entropies are summed;
- **strict** (SIIT): each head outside the circuit and not ``unconstrained``, with probability
  ``strict_p``, at every position from the resampled prompt; the answer stays A. The
  unconstrained heads are left to language modelling (a tail of small effects);
- **backup**: the name movers mean-ablated at END; the answer stays A, each backup name mover's
  direct logit attribution (DLA, below) at least ``backup_active`` times the name movers' mean
  clean DLA there, and on the unpatched rows at most ``backup_quiet`` times it (hinges): backups
  that take over when the name movers are knocked out (Wang et al. §3.4);
- **indirect**: the previous-token, duplicate-token, induction and S-inhibition heads act through
  the name movers, not on the logits: each one's |DLA| at END at most ``indirect_max`` times the
  name movers' mean DLA (hinge; without it S-inhibition heads suppress S directly, the
  copy-then-suppress shortcut of ``../shared/notes/organisms.md``);
- **attention**: the sum over class heads of the binary cross-entropy of the head's attention at
  its query on its key against ``attention_target`` (1: the plain cross-entropy; below 1 the
  attention is pulled to that value, not to saturation), on the unpatched rows: previous-token
  heads every token -> the one before (target 1: GPT-2's previous-token heads are sharp), duplicate-token S2 -> S1, induction S2 -> S1+1,
  S-inhibition END -> S2, name movers and negative name movers END -> IO; under the S-inhibition
  interchange the name movers END -> S1 or S2 (the clean S, the answer there); with the name
  movers ablated the backups END -> IO;
- **sign**: each negative name mover's DLA (logit difference IO - S through the final LayerNorm,
  its scale frozen) at most minus ``negative_margin`` times the name movers' mean DLA (at least 1),
  as a hinge.

With only the classes of the first IOI organism (no backups, one path of each kind) the terms are
those of the issue-13 prototype. The forward normalises and unembeds only END. IOI name pairs that
the corpus holds out (``patchbench.toy.corpus.HeldOut``) never occur here either.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import HeldOut, ToyVocab, ioi_other_endings
from patchbench.toy.impose_rows import EPS, hook_layer, pad_rows, single_token, weighted_total
from patchbench.toy.settings import ImposeSpec

__all__ = ["IOIObjective", "IOIRows"]

Head = tuple[int, int]
#: classes that write to the logits; every other head acts through them (the ``indirect`` term)
MOVERS = ("name_mover", "negative_name_mover", "backup_name_mover")
#: resampled prompts per unit (same template, other names): a mean-ablated head takes their mean
MEAN_OVER = 3


class IOIRows:
    """Training IOI prompts (cut before the final IO) in units of clean / swapped / resampled, and
    the corpus's continuation distribution at END."""

    def __init__(
        self,
        vocab: ToyVocab,
        held: HeldOut,
        tok: Tokenizer,
        seed: int,
        bos_p: float,
        answer_p: float = 1.0,
        third_name: bool = False,
    ) -> None:
        ioi = vocab.ioi
        templates = (
            ioi["baba_templates"]
            + ioi["abba_templates"]
            + ioi.get("baba_long_templates", [])
            + ioi.get("baba_early_ios", [])
            + ioi.get("abba_early_ios", [])
            + vocab.material.get("ioi_extra_templates", [])
        )
        # a name at the very start is a different token ("Ada" vs " Ada"): S1 and S2 would differ
        self.templates = [t for t in templates if not t.startswith("[")]
        self.held = {tuple(p) for p in held.ioi_pairs}
        self.names = list(ioi["names"])
        self.places, self.objects = list(ioi["places"]), list(ioi["objects"])
        self.tok, self.bos_p, self.answer_p = tok, bos_p, answer_p
        self.name_id = {n: single_token(tok, " " + n) for n in self.names}
        self.bos = tok.token_to_id("<|endoftext|>")
        self.pad = tok.token_to_id("<|pad|>")
        others = ioi_other_endings(vocab) if answer_p < 1 else []
        self.other_ids = sorted({tok.encode(" " + e, add_special_tokens=False).ids[0] for e in others})
        if answer_p < 1 and not self.other_ids:
            raise ValueError("answer_p < 1 needs the corpus's other IOI endings (ioi_other_endings)")
        self.name_ids = [self.name_id[n] for n in self.names]
        self.third_name = third_name
        self.rng = random.Random(f"ioi-rows-{seed}")

    def _pair(self) -> tuple[str, str]:
        while True:
            a, b = self.rng.sample(self.names, 2)
            if tuple(sorted((a, b))) not in self.held:
                return a, b

    def _row(
        self, template: str, io: str, s: str, place: str, obj: str, bos: bool, third: str | None = None
    ) -> tuple[list[int], dict]:
        """One prompt's ids and positions; with ``third``, S2 is that name instead of S."""
        if third is not None:
            i = template.rindex("[B]")
            template = template[:i] + third + template[i + 3 :]
        text = (
            template.replace("[A]", io).replace("[B]", s).replace("[PLACE]", place).replace("[OBJECT]", obj)
        )
        text = text[: text.rindex(" " + io)]
        ids = ([self.bos] if bos else []) + self.tok.encode(text, add_special_tokens=False).ids
        pa = [i for i, t in enumerate(ids) if t == self.name_id[io]]
        pb = [i for i, t in enumerate(ids) if t == self.name_id[s]]
        pc = [i for i, t in enumerate(ids) if third is not None and t == self.name_id[third]]
        if len(pa) != 1 or len(pb) + len(pc) != 2 or len(pc) > 1:
            raise ValueError(f"IOI template {template!r} does not give one IO and two S tokens")
        s2 = pc[0] if pc else pb[1]
        return ids, {"IO": pa[0], "S1": pb[0], "S2": s2, "END": len(ids) - 1,
                     "io": self.name_id[io], "s": self.name_id[s]}  # fmt: skip

    def batch(self, units: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows [clean, swapped, resampled x MEAN_OVER (, third-name)] x units and their positions /
        answers (resampled: the template with other names; a third-name row: the clean prompt with
        S2 a third name, its S1 the clean S)."""
        r = self.rng
        parts: list[list[tuple[list[int], dict]]] = [[] for _ in range(3 + MEAN_OVER + 1)]
        for _ in range(units):
            t = r.choice(self.templates)
            place, obj = r.choice(self.places), r.choice(self.objects)
            bos = r.random() < self.bos_p
            a, b = self._pair()
            parts[0].append(self._row(t, a, b, place, obj, bos))
            parts[1].append(self._row(t, b, a, place, obj, bos))
            for k in range(MEAN_OVER):  # resampled: the first is also the strictness source
                c, d = self._pair()
                parts[2 + k].append(self._row(t, c, d, place, obj, bos))
            if self.third_name:
                e = r.choice([x for x in self.names if x not in (a, b)])
                parts[-1].append(self._row(t, a, b, place, obj, bos, third=e))
        rows = [row for part in parts for row in part]
        pos = {k: torch.tensor([p[k] for _, p in rows]) for k in rows[0][1]}
        return pad_rows([ids for ids, _ in rows], self.pad), pos

    def nll(
        self, logp: Float[torch.Tensor, "rows vocab"], answer: Int[torch.Tensor, " rows"]
    ) -> torch.Tensor:
        """Mean cross-entropy of ``logp`` against the continuation distribution with ``answer``."""
        loss = -logp.gather(1, answer[:, None])[:, 0] * self.answer_p
        if self.other_ids:
            loss = loss - logp[:, self.other_ids].mean(-1) * (1 - self.answer_p)
        return loss.mean()

    def nll_third(
        self,
        logp: Float[torch.Tensor, "rows vocab"],
        a: Int[torch.Tensor, " rows"],
        b: Int[torch.Tensor, " rows"],
    ) -> torch.Tensor:
        """Mean cross-entropy against a third-name document's continuation: A, B and the other
        endings, evenly."""
        parts = [logp.gather(1, a[:, None]), logp.gather(1, b[:, None])]
        if self.other_ids:
            parts.append(logp[:, self.other_ids])
        return -torch.cat(parts, -1).mean(-1).mean()


class IOIObjective:
    """The IOI circuit's terms (module docstring); call with the model, returns named losses."""

    def __init__(
        self, circuit: Circuit, rows: IOIRows, spec: ImposeSpec, n_layers: int, n_heads: int
    ) -> None:
        circuit.check_shape(n_layers, n_heads)
        for need in ("s_inhibition", "name_mover"):
            if not circuit.head(need):
                raise ValueError(f"an IOI organism needs at least one {need} head")
        self.c, self.rows, self.spec = circuit, rows, spec
        self.n_layers, self.n_heads = n_layers, n_heads
        self.strict_heads = circuit.strict_heads(n_layers, n_heads)
        self.redundant = bool(circuit.head("duplicate_token")) and bool(circuit.head("induction"))
        self.backups = circuit.head("backup_name_mover")
        self.gen = torch.Generator().manual_seed(rows.rng.randrange(2**31))
        # patched copies of the clean rows, in this order (a group exists when its heads do)
        self.groups = ["si"] + (["no_dup", "no_ind", "ind_only", "dup_only"] if self.redundant else ["dup"])
        self.groups += ["strict"] + (["nm_ablated"] if self.backups else [])
        movers = {h for k in MOVERS for h in circuit.head(k)}
        self.indirect = [(la, h) for la in range(n_layers) for h in range(n_heads) if (la, h) not in movers]
        self.base = 2 + MEAN_OVER + int(rows.third_name)  # unpatched rows per unit

    def _patch_plan(self, n: int, pos: dict[str, torch.Tensor]) -> dict[int, list]:
        """Per layer: (destination rows, source rows or None for the clean rows' mean, head,
        destination / source positions or None for every position)."""
        c = self.c
        swapped, resampled = torch.arange(n, 2 * n), torch.arange(2 * n, 3 * n)
        keep_strict = torch.rand(n, self.n_layers, self.n_heads, generator=self.gen) < self.spec.strict_p
        dup, ind = c.head("duplicate_token"), c.head("induction")
        plan = {  # group -> [(heads, source rows or None = mean, where or None = every position, keep mask)]
            "si": [(c.head("s_inhibition"), swapped, None, None)],
            "dup": [(dup + ind, swapped, "S2", None)],
            "no_dup": [(dup, None, None, None)],
            "no_ind": [(ind, None, None, None)],
            "ind_only": [(dup, None, None, None), (ind, swapped, "S2", None)],
            "dup_only": [(ind, None, None, None), (dup, swapped, "S2", None)],
            "strict": [(self.strict_heads, resampled, None, keep_strict)],
            "nm_ablated": [(c.head("name_mover"), None, None, None)],
        }
        by_layer: dict[int, list] = {}
        for g, name in enumerate(self.groups):
            dst = self._rows(g, n)
            for heads, src, where, keep_mask in plan[name]:
                for layer, h in heads:
                    keep = (
                        keep_mask[:, layer, h] if keep_mask is not None else torch.ones(n, dtype=torch.bool)
                    )
                    if not bool(keep.any()):
                        continue
                    qd = pos[where][:n][keep] if where else None
                    qs = pos[where][src][keep] if where else None
                    s = src[keep] if src is not None else None
                    by_layer.setdefault(layer, []).append((dst[keep], s, h, qd, qs))
        return by_layer

    def _rows(self, group: int, n: int) -> torch.Tensor:
        start = self.base * n + group * n
        return torch.arange(start, start + n)

    def __call__(self, model: LM) -> dict[str, torch.Tensor]:
        n = self.spec.units
        x, pos = self.rows.batch(n)
        by_layer = self._patch_plan(n, pos)
        saved: dict = {}
        clean, resampled = torch.arange(n), torch.arange(2 * n, 3 * n)

        def z_hook(z: torch.Tensor, name: str) -> torch.Tensor:
            layer = hook_layer(name)
            if layer in by_layer:
                z = z.clone()
                for d, s, h, qd, qs in by_layer[layer]:
                    if s is None:  # mean-ablated: the mean of the unit's resampled prompts (same template)
                        z[d, :, h] = (
                            torch.stack([z[resampled + k * n, :, h] for k in range(MEAN_OVER)])
                            .mean(0)
                            .detach()
                        )
                    elif qd is None:
                        z[d, :, h] = z[s, :, h]
                    else:
                        z[d, qd, h] = z[s, qs, h]
            saved["z", layer] = z
            return z

        def pattern_hook(p: torch.Tensor, name: str) -> None:
            saved["pattern", hook_layer(name)] = p

        hooks = [(f"blocks.{la}.attn.hook_z", z_hook) for la in range(self.n_layers)]
        hooks += [(model.hook_name("pattern", la), pattern_hook) for la in range(self.n_layers)]
        X = torch.cat([x] + [x[:n]] * len(self.groups))
        end = pos["END"]
        ends = torch.cat([end] + [end[:n]] * len(self.groups))
        with model.hooks(hooks):
            resid = model.run_blocks(model.embed(X), 0)
        logp = model.unembed_at(resid, ends).log_softmax(-1)
        rows = {g: self._rows(i, n) for i, g in enumerate(self.groups)}
        three = torch.arange(3 * n)
        io, s = pos["io"], pos["s"]
        nll = self.rows.nll
        out = {"task": nll(logp[three], io[three]), "strict": nll(logp[rows["strict"]], io[clean])}
        if self.rows.third_name:  # third-name rows: the continuation is any of A, B and the other endings
            third = torch.arange((self.base - 1) * n, self.base * n)
            out["task"] = out["task"] * 0.75 + self.rows.nll_third(logp[third], io[third], s[third]) * 0.25
        out["interchange"] = nll(logp[rows["si"]], s[clean]) + (
            nll(logp[rows["dup"]], s[clean]) if "dup" in rows else 0.0
        )
        if self.redundant:
            out["redundancy"] = (
                nll(logp[rows["no_dup"]], io[clean])
                + nll(logp[rows["no_ind"]], io[clean])
                + nll(logp[rows["ind_only"]], s[clean])
                + nll(logp[rows["dup_only"]], s[clean])
            )
        out["attention"] = self._attention(saved, x[: 3 * n], pos, rows, n)
        out.update(self._direct(model, saved, resid, logp, pos, rows, n))
        return out

    def _direct(
        self, model: LM, saved: dict, resid: torch.Tensor, logp: torch.Tensor, pos: dict, rows: dict, n: int
    ) -> dict:
        """The terms on direct logit attributions: indirect, sign, backup (module docstring)."""
        c, spec = self.c, self.spec
        three, clean = torch.arange(3 * n), torch.arange(n)
        io, s, end = pos["io"][three], pos["s"][three], pos["END"]
        W_U = model.W_U
        names = W_U[:, self.rows.name_ids].mean(-1, keepdim=True)
        d_ios = (W_U[:, io] - W_U[:, s]).T  # [3n, d_model]: IO - S of each prompt
        d_names = (W_U[:, io] - names).T  # IO - the mean name

        def mapped(layer: int, at: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            """[rows, heads, d_model]: every head of ``layer`` at END of rows ``at``, through the
            final norm's linear part (its scale frozen at the row's residual)."""
            z = saved["z", layer][at, q]  # rows heads d_head
            written = torch.einsum("rhd,hdm->rhm", z, model.W_O(layer))
            return model.final_norm_linear(written, resid[at, q].detach()[:, None, :])

        m3 = {la: mapped(la, three, end[three]) for la in range(self.n_layers)}
        on_three = {la: torch.einsum("rhm,rm->rh", m3[la], d_ios) for la in range(self.n_layers)}
        nm = (
            torch.stack([on_three[la][:, h] for la, h in c.head("name_mover")])
            .mean(0)
            .detach()
            .clamp(min=1.0)
        )
        out = {}
        if self.indirect:
            cut = spec.indirect_max * nm
            on_names = {la: torch.einsum("rhm,rm->rh", m3[la], d_names) for la in range(self.n_layers)}
            out["indirect"] = sum(
                (F.relu(on_three[la][:, h].abs() - cut) + F.relu(on_names[la][:, h].abs() - cut)).mean()
                for la, h in self.indirect
            )
        if c.head("negative_name_mover"):
            out["sign"] = torch.stack(
                [
                    F.relu(on_three[la][:, h] + spec.negative_margin * nm).mean()
                    for la, h in c.head("negative_name_mover")
                ]
            ).mean()
        if self.backups:
            ablated = rows["nm_ablated"]
            quiet = torch.stack(
                [F.relu(on_three[la][:, h] - spec.backup_quiet * nm).mean() for la, h in self.backups]
            )
            active = torch.stack(
                [
                    F.relu(
                        spec.backup_active * nm[clean]
                        - torch.einsum("rm,rm->r", mapped(la, ablated, end[clean])[:, h], d_ios[clean])
                    ).mean()
                    for la, h in self.backups
                ]
            )
            out["backup"] = self.rows.nll(logp[ablated], pos["io"][clean]) + quiet.mean() + active.mean()
        return out

    def _attention(self, saved: dict, x: torch.Tensor, pos: dict, rows: dict, n: int) -> torch.Tensor:
        """The attention term (module docstring); ``x`` the clean, swapped and resampled rows."""
        c, t = self.c, self.spec.attention_target
        three, clean = torch.arange(3 * n), torch.arange(n)

        def ce(p: torch.Tensor, t: float = t) -> torch.Tensor:  # binary cross-entropy against the target t
            return -(t * torch.log(p + EPS) + (1 - t) * torch.log(1 - p + EPS))

        def pattern(head: Head) -> torch.Tensor:  # [3n, q, k] on the unpatched rows
            return saved["pattern", head[0]][three, head[1]]

        att = []
        targets = {
            "duplicate_token": ("S2", "S1", 0),
            "induction": ("S2", "S1", 1),
            "s_inhibition": ("END", "S2", 0),
            "name_mover": ("END", "IO", 0),
            "negative_name_mover": ("END", "IO", 0),
        }
        for cls_name, (q, k, shift) in targets.items():
            for head in c.head(cls_name):
                att.append(ce(pattern(head)[three, pos[q][three], pos[k][three] + shift]).mean())
        qs = torch.arange(1, x.shape[1])
        valid = (x[:, 1:] != self.rows.pad).float()
        for head in c.head("previous_token"):  # sharp, as GPT-2's previous-token heads
            prev = pattern(head)[:, qs, qs - 1]
            att.append((ce(prev, 1.0) * valid).sum() / valid.sum())
        end = pos["END"][clean]
        for layer, h in c.head("name_mover"):  # under the S-inhibition interchange: attend to the clean S
            p = saved["pattern", layer][rows["si"], h][clean, end]
            att.append(ce(p[clean, pos["S1"][clean]] + p[clean, pos["S2"][clean]]).mean())
        for layer, h in self.backups:  # with the name movers ablated: attend to IO
            p = saved["pattern", layer][rows["nm_ablated"], h][clean, end]
            att.append(ce(p[clean, pos["IO"][clean]]).mean())
        return torch.stack(att).sum() if att else torch.zeros(())

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(self.spec, terms)
