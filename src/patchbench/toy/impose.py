"""Circuit-imposing objectives: the training terms that make an organism implement its circuit.

Next-token prediction on the toy corpus teaches the tasks; on its own it rewards whatever shortcut
solves them (``../shared/notes/organisms.md``: 2-4 layer models trained on IOI never grew name
movers; plain training looks facts up at the last token, in MLP 0). An organism therefore also
trains on task prompts with terms that impose a known algorithm on chosen components
(``patchbench.toy.circuit``), in the manner of Strict Interchange Intervention Training (SIIT;
Gupta et al., arXiv 2407.14494). One objective per circuit kind, :data:`OBJECTIVES`: ``ioi``
(``patchbench.toy.impose_ioi``, its module docstring lists the terms) and ``factual``,
``greater_than``, ``arithmetic``, ``docstring`` (``patchbench.toy.objectives.<kind>``). The rows
they build share ``patchbench.toy.impose_rows``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tokenizers import Tokenizer

from patchbench.lm import LM
from patchbench.toy.circuit import Circuit
from patchbench.toy.corpus import CorpusSpec, HeldOut, ToyVocab
from patchbench.toy.impose_ioi import IOIObjective, IOIRows
from patchbench.toy.objectives import arithmetic, docstring, factual, greater_than
from patchbench.toy.settings import ImposeSpec

__all__ = ["OBJECTIVES", "IOIObjective", "IOIRows", "ImposeSpec", "make_objective"]

Objective = Callable[[LM], dict[str, torch.Tensor]]


def _ioi(circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus) -> IOIObjective:
    rows = IOIRows(vocab, held, tok, seed, spec.bos_p, corpus.ioi_answer_p, corpus.ioi_third_name > 0)
    return IOIObjective(circuit, rows, spec, n_layers, n_heads)


def _siit(objective: type, rows: type) -> Callable[..., Objective]:
    """The builder of a kind whose objective takes its rows ``rows(vocab, held, tokenizer, seed,
    bos_p)`` and reads no corpus setting."""

    def builder(circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus) -> Objective:
        return objective(circuit, rows(vocab, held, tok, seed, spec.bos_p), spec, n_layers, n_heads)

    return builder


#: circuit kind -> builder of its objective: ``(circuit, vocab, held, tokenizer, impose spec,
#: n_layers, n_heads, seed, corpus spec) -> objective`` (an object with ``__call__(model) -> terms``
#: and ``total(terms)``).
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "ioi": _ioi,
    "factual": _siit(factual.FactualObjective, factual.FactRows),
    "greater_than": _siit(greater_than.GreaterThanObjective, greater_than.YearRows),
    "arithmetic": _siit(arithmetic.ArithmeticObjective, arithmetic.ArithRows),
    "docstring": _siit(docstring.DocstringObjective, docstring.DocRows),
}


def make_objective(
    circuit: Circuit | None,
    vocab: ToyVocab,
    held: HeldOut,
    tok: Tokenizer,
    spec: ImposeSpec,
    n_layers: int,
    n_heads: int,
    seed: int,
    corpus: CorpusSpec | None = None,
) -> Objective | None:
    """The objective imposing ``circuit`` on an ``n_layers`` x ``n_heads`` model (None: plain
    language modelling); ``corpus`` is the organism's corpus (its IOI continuation distribution)."""
    if circuit is None:
        return None
    if circuit.kind not in OBJECTIVES:
        raise ValueError(
            f"no imposing objective for circuit kind {circuit.kind!r}; known: {sorted(OBJECTIVES)}"
        )
    return OBJECTIVES[circuit.kind](
        circuit, vocab, held, tok, spec, n_layers, n_heads, seed, corpus or CorpusSpec()
    )
