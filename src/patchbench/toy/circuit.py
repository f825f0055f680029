"""The circuits the model organisms are trained to implement, as data beside their weights.

An organism is trained (``patchbench.toy.impose``) so that chosen components carry chosen
variables of a known algorithm, the way Strict Interchange Intervention Training (SIIT; Gupta et
al., *InterpBench*, arXiv 2407.14494) builds models with a known circuit. The assignment is the
model's ground truth: it is written as ``circuit.json`` next to ``model.safetensors`` so that
every detection (Table 1, the classifier, patching) can be scored against it.

Kinds and their classes (``CLASSES``: kind -> head classes and MLP roles):

``ioi`` (Wang et al. 2023's algorithm, attention heads ``L.H`` per class)
    ``previous_token`` (every token attends to the one before it), ``duplicate_token`` (S2 attends
    to S1), ``induction`` (S2 attends to S1+1, through the previous-token head),
    ``s_inhibition`` (END attends to S2 and tells the name movers which name is S),
    ``name_mover`` (END attends to IO, copies it: positive direct logit attribution),
    ``negative_name_mover`` (END attends to IO, writes against it: negative attribution),
    ``backup_name_mover`` (attends to IO and copies it when the name movers are ablated).
    Every other head is outside the circuit and is trained to be irrelevant to IOI (strictness).

``factual`` (subject enrichment, ROME / Geva et al. 2023)
    ``subject_composition`` heads (from the last subject token onto the subject's earlier tokens),
    ``attribute_extraction`` heads (from the last token onto the last subject token: they read the
    asked attribute out of the enriched subject and write it to the logits);
    ``subject_enrichment``: the MLP layers that, at the last subject token, write the subject's
    attributes (the lookup, distributed over the layers); ``outside``: MLP layers at the last
    subject token trained to carry none of it (and every MLP at the last token carries nothing
    about the subject).

``greater_than`` (Hanna et al. 2023)
    ``year_mover`` heads (from the last token onto YY: they move the start year's last two digits),
    ``comparison`` MLPs (at the last token: turn YY into a distribution over the years above it);
    ``outside``: MLPs at the last token trained to carry nothing about YY.

``arithmetic`` (Stolfo et al. 2023)
    ``x_mover`` and ``y_mover`` heads (from the last token onto the query's operands X3 and Y3:
    each carries its operand),
    ``result`` MLPs (at the last token: compute the result from the moved operands);
    ``outside``: MLPs at the last token trained to carry nothing about the operands.

``docstring`` (Heimersheim & Janiak 2023, attention only)
    ``previous_token`` heads (every token receives the one before it: the last documented argument
    is "the token after ``param``"), ``previous_argument`` heads (each signature argument receives
    the argument before it, two tokens back), ``last_param`` heads (the last token attends to the last documented argument, B, and moves it),
    ``argument_mover`` heads (the last token attends to the signature argument whose predecessor
    is B, that is C_def, and copies it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLASSES",
    "FACTUAL_CLASSES",
    "FACTUAL_ROLES",
    "IOI_CLASSES",
    "KINDS",
    "Circuit",
    "read_circuit",
    "write_circuit",
]

#: Head classes of the IOI circuit, in the order of Wang et al.'s path from S2 to the logits.
IOI_CLASSES = (
    "previous_token",
    "duplicate_token",
    "induction",
    "s_inhibition",
    "name_mover",
    "negative_name_mover",
    "backup_name_mover",
)
#: Per circuit kind: its head classes and its MLP roles (the module docstring says what each does).
CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "ioi": {"heads": IOI_CLASSES, "mlps": ()},
    "factual": {
        "heads": ("subject_composition", "attribute_extraction"),
        "mlps": ("subject_enrichment", "outside"),
    },
    "greater_than": {"heads": ("year_mover",), "mlps": ("comparison", "outside")},
    "arithmetic": {"heads": ("x_mover", "y_mover"), "mlps": ("result", "outside")},
    "docstring": {
        "heads": ("previous_token", "previous_argument", "last_param", "argument_mover"),
        "mlps": (),
    },
}
FACTUAL_ROLES = CLASSES["factual"]["mlps"]
FACTUAL_CLASSES = CLASSES["factual"]["heads"]
KINDS = tuple(CLASSES)
CIRCUIT_FILE = "circuit.json"

Head = tuple[int, int]


@dataclass(frozen=True)
class Circuit:
    """One organism's known-by-construction circuit.

    ``heads``: class -> heads ``(layer, head)``; ``mlps``: role -> MLP layers (``CLASSES`` per kind).
    """

    kind: str
    heads: Mapping[str, tuple[Head, ...]] = field(default_factory=dict)
    mlps: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"circuit kind {self.kind!r} is not one of {KINDS}")
        known = CLASSES[self.kind]
        bad = set(self.heads) - set(known["heads"])
        if bad:
            raise ValueError(
                f"{self.kind} circuit: unknown head classes {sorted(bad)}; known: {known['heads']}"
            )
        bad_roles = set(self.mlps) - set(known["mlps"])
        if bad_roles:
            raise ValueError(
                f"{self.kind} circuit: unknown MLP roles {sorted(bad_roles)}; known: {known['mlps']}"
            )
        heads = {c: tuple((int(h[0]), int(h[1])) for h in v) for c, v in self.heads.items()}
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "mlps", {r: tuple(int(x) for x in v) for r, v in self.mlps.items()})
        seen: dict[Head, str] = {}
        for c, hs in heads.items():
            for h in hs:
                if h in seen:
                    raise ValueError(f"head {h[0]}.{h[1]} is in two classes: {seen[h]} and {c}")
                seen[h] = c

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> Circuit:
        """From a config / JSON mapping: ``{kind, heads: {class: ["L.H", ...]}, mlps: {role: [L]}}``."""
        heads = {c: tuple(_head(h) for h in v) for c, v in dict(d.get("heads", {})).items()}
        return cls(kind=d["kind"], heads=heads, mlps=dict(d.get("mlps", {})))

    def head(self, cls_name: str) -> tuple[Head, ...]:
        return self.heads.get(cls_name, ())

    def mlp(self, role: str) -> tuple[int, ...]:
        return self.mlps.get(role, ())

    def circuit_heads(self) -> tuple[Head, ...]:
        """Every head of the circuit, sorted."""
        return tuple(sorted({h for hs in self.heads.values() for h in hs}))

    def outside_heads(self, n_layers: int, n_heads: int) -> tuple[Head, ...]:
        inside = set(self.circuit_heads())
        return tuple((la, h) for la in range(n_layers) for h in range(n_heads) if (la, h) not in inside)

    def check_shape(self, n_layers: int, n_heads: int) -> None:
        """Refuse a circuit that names components the model does not have."""
        for c, hs in self.heads.items():
            for la, h in hs:
                if not (0 <= la < n_layers and 0 <= h < n_heads):
                    raise ValueError(f"{c} head {la}.{h} is outside a {n_layers} x {n_heads} model")
        for r, layers in self.mlps.items():
            for la in layers:
                if not 0 <= la < n_layers:
                    raise ValueError(f"{r} MLP layer {la} is outside a {n_layers}-layer model")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "heads": {c: [f"{la}.{h}" for la, h in hs] for c, hs in self.heads.items()},
            "mlps": {r: list(v) for r, v in self.mlps.items()},
        }


def _head(text: str | list | tuple) -> Head:
    if isinstance(text, str):
        la, h = text.split(".")
        return int(la), int(h)
    return int(text[0]), int(text[1])


def write_circuit(circuit: Circuit, model_dir: Path | str, description: str = "") -> Path:
    """``circuit.json`` beside the weights (components per class, and how they were imposed)."""
    path = Path(model_dir) / CIRCUIT_FILE
    payload = {**circuit.to_dict(), "description": description}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_circuit(model_dir: Path | str) -> Circuit | None:
    """The organism's circuit, or None for a model without one."""
    path = Path(model_dir) / CIRCUIT_FILE
    if not path.exists():
        return None
    return Circuit.from_config(json.loads(path.read_text()))
