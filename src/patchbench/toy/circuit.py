"""The circuits the model organisms are trained to implement, as data beside their weights.

An organism is trained (``patchbench.toy.impose``) so that chosen components carry chosen
variables of a known algorithm, the way Strict Interchange Intervention Training (SIIT; Gupta et
al., *InterpBench*, arXiv 2407.14494) builds models with a known circuit. The assignment is the
model's ground truth: it is written as ``circuit.json`` next to ``model.safetensors`` so that
every detection (Table 1, the robustness report, patching) is scored against it.

``circuit.json``::

    {"kind": "ioi",
     "heads": {class: ["L.H", ...]},          # attention heads per class of the kind
     "mlps": {role: [L, ...]},                # MLP layers per role of the kind
     "notes": {class: "what it does here"},   # optional, per class or role
     "unconstrained": ["L.H", ...],           # optional: outside the circuit, not trained inert
     "properties": {name: [min, max]},        # optional: stated properties (null = no bound),
                                              #   checked by `patchbench organisms --check`
     "description": "..."}

Every kind's classes and roles live in :data:`KINDS` (one entry per kind, so each task's organism
adds its own). The kinds:

``ioi`` (Wang et al. 2023's algorithm, attention heads ``L.H`` per class)
    ``previous_token`` (every token attends to the one before it), ``duplicate_token`` (S2 attends
    to S1), ``induction`` (S2 attends to S1+1, through the previous-token head),
    ``s_inhibition`` (END attends to S2 and tells the name movers which name is S),
    ``name_mover`` (END attends to IO, copies it: positive direct logit attribution),
    ``negative_name_mover`` (END attends to IO, writes against it: negative attribution),
    ``backup_name_mover`` (little direct effect on clean prompts; attends to IO and copies it when
    the name movers are ablated). Heads outside the circuit are trained to be irrelevant to IOI
    (strictness), except the ``unconstrained`` ones.

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
    the argument before it, two tokens back), ``last_param`` heads (the last token attends to the
    last documented argument, B, and moves it), ``argument_mover`` heads (the last token attends to the signature argument whose predecessor
    is B, that is C_def, and copies it).

A ``circuit.json`` naming a kind, class or role this module does not know, or a component the
model beside it does not have, is refused by :func:`check_circuit_file` (an
:class:`~patchbench.errors.InputError` naming the file and the fix).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchbench.errors import InputError

__all__ = [
    "CIRCUIT_FILE",
    "IOI_CLASSES",
    "KINDS",
    "Circuit",
    "CircuitError",
    "CircuitKind",
    "check_circuit_file",
    "read_circuit",
    "write_circuit",
]

CIRCUIT_FILE = "circuit.json"
Head = tuple[int, int]


@dataclass(frozen=True)
class CircuitKind:
    """What a circuit of one kind may name: head classes, MLP roles (the role ``outside`` names
    layers trained to carry nothing, so it is no class of the circuit) and the tasks it serves."""

    heads: tuple[str, ...]
    mlps: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()


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

#: Every circuit kind: its head classes, MLP roles and the tasks it is known for (the IOI circuit
#: serves every IOI variant: the keys of ``patchbench.tasks.ioi.IOI_VARIANTS``).
KINDS: dict[str, CircuitKind] = {
    "ioi": CircuitKind(heads=IOI_CLASSES, tasks=("ioi", "ioi_s1io", "ioi_abc")),
    "factual": CircuitKind(
        heads=("subject_composition", "attribute_extraction"),
        mlps=("subject_enrichment", "outside"),
        tasks=("factual",),
    ),
    "greater_than": CircuitKind(
        heads=("year_mover",), mlps=("comparison", "outside"), tasks=("greater_than",)
    ),
    "arithmetic": CircuitKind(
        heads=("x_mover", "y_mover"),
        mlps=("result", "outside"),
        tasks=("arithmetic_add", "arithmetic_sub", "arithmetic_mul"),
    ),
    "docstring": CircuitKind(
        heads=("previous_token", "previous_argument", "last_param", "argument_mover"), tasks=("docstring",)
    ),
}
#: The MLP role naming layers trained to carry nothing: outside the circuit.
OUTSIDE_ROLE = "outside"


class CircuitError(InputError, ValueError):
    """A circuit that names an unknown kind, class, role or a component the model does not have."""


@dataclass(frozen=True)
class Circuit:
    """One organism's known-by-construction circuit.

    ``heads``: class -> heads ``(layer, head)``; ``mlps``: role -> MLP layers; ``notes``: class or
    role -> text; ``unconstrained``: heads outside the circuit that training leaves free (no
    strictness); ``properties``: stated property -> (min, max), None for no bound.
    """

    kind: str
    heads: Mapping[str, tuple[Head, ...]] = field(default_factory=dict)
    mlps: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    unconstrained: tuple[Head, ...] = ()
    properties: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CircuitError(f"circuit kind {self.kind!r} is not one of {sorted(KINDS)}")
        spec = KINDS[self.kind]
        bad = set(self.heads) - set(spec.heads)
        if bad:
            raise CircuitError(
                f"{self.kind} circuit: unknown head classes {sorted(bad)}; known: {spec.heads}"
            )
        bad_roles = set(self.mlps) - set(spec.mlps)
        if bad_roles:
            raise CircuitError(
                f"{self.kind} circuit: unknown MLP roles {sorted(bad_roles)}; known: {spec.mlps or 'none'}"
            )
        bad_notes = set(self.notes) - set(spec.heads) - set(spec.mlps)
        if bad_notes:
            raise CircuitError(f"{self.kind} circuit: notes for unknown classes {sorted(bad_notes)}")
        heads = {c: tuple((int(h[0]), int(h[1])) for h in v) for c, v in self.heads.items()}
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "mlps", {r: tuple(int(x) for x in v) for r, v in self.mlps.items()})
        object.__setattr__(self, "notes", {str(k): str(v) for k, v in self.notes.items()})
        free = tuple(sorted((int(h[0]), int(h[1])) for h in self.unconstrained))
        object.__setattr__(self, "unconstrained", free)
        props = {}
        for name, bounds in self.properties.items():
            lo, hi = bounds
            props[str(name)] = (None if lo is None else float(lo), None if hi is None else float(hi))
        object.__setattr__(self, "properties", props)
        seen: dict[Head, str] = {}
        for c, hs in heads.items():
            for h in hs:
                if h in seen:
                    raise CircuitError(f"head {h[0]}.{h[1]} is in two classes: {seen[h]} and {c}")
                seen[h] = c
        both = sorted(f"{la}.{h}" for la, h in free if (la, h) in seen)
        if both:
            raise CircuitError(f"heads {both} are both in the circuit and unconstrained outside it")

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> Circuit:
        """From a config / JSON mapping (the module docstring's layout; ``description`` is ignored)."""
        unknown = set(d) - {"kind", "heads", "mlps", "notes", "unconstrained", "properties", "description"}
        if unknown:
            raise CircuitError(
                f"unknown circuit keys {sorted(unknown)}; known: kind, heads, mlps, notes, unconstrained, "
                "properties, description"
            )
        if "kind" not in d:
            raise CircuitError(f"a circuit needs a `kind` (one of {sorted(KINDS)})")
        heads = {c: tuple(_head(h) for h in v) for c, v in dict(d.get("heads") or {}).items()}
        props = {}
        for name, bounds in dict(d.get("properties") or {}).items():
            if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                raise CircuitError(
                    f"circuit property {name!r}: expected [min, max] (null = no bound), got {bounds!r}"
                )
            props[name] = tuple(bounds)
        return cls(
            kind=d["kind"],
            heads=heads,
            mlps=dict(d.get("mlps") or {}),
            notes=dict(d.get("notes") or {}),
            unconstrained=tuple(_head(h) for h in d.get("unconstrained") or ()),
            properties=props,
        )

    def head(self, cls_name: str) -> tuple[Head, ...]:
        return self.heads.get(cls_name, ())

    def mlp(self, role: str) -> tuple[int, ...]:
        return self.mlps.get(role, ())

    def circuit_heads(self) -> tuple[Head, ...]:
        """Every head of the circuit, sorted."""
        return tuple(sorted({h for hs in self.heads.values() for h in hs}))

    def circuit_mlps(self) -> tuple[int, ...]:
        """Every MLP layer of the circuit (the ``outside`` role excluded), sorted."""
        return tuple(sorted({la for r, ls in self.mlps.items() if r != OUTSIDE_ROLE for la in ls}))

    def outside_heads(self, n_layers: int, n_heads: int) -> tuple[Head, ...]:
        inside = set(self.circuit_heads())
        return tuple((la, h) for la in range(n_layers) for h in range(n_heads) if (la, h) not in inside)

    def strict_heads(self, n_layers: int, n_heads: int) -> tuple[Head, ...]:
        """Heads outside the circuit that training makes irrelevant (all but the unconstrained)."""
        free = set(self.unconstrained)
        return tuple(h for h in self.outside_heads(n_layers, n_heads) if h not in free)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this circuit is known for (:data:`KINDS`)."""
        return KINDS[self.kind].tasks

    def check_shape(self, n_layers: int, n_heads: int) -> None:
        """Refuse a circuit that names components the model does not have."""
        for c, hs in [*self.heads.items(), ("unconstrained", self.unconstrained)]:
            for la, h in hs:
                if not (0 <= la < n_layers and 0 <= h < n_heads):
                    raise CircuitError(f"{c} head {la}.{h} is outside a {n_layers} x {n_heads} model")
        for r, layers in self.mlps.items():
            for la in layers:
                if not 0 <= la < n_layers:
                    raise CircuitError(f"{r} MLP layer {la} is outside a {n_layers}-layer model")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "heads": {c: [f"{la}.{h}" for la, h in hs] for c, hs in self.heads.items()},
            "mlps": {r: list(v) for r, v in self.mlps.items()},
        }
        if self.notes:
            out["notes"] = dict(self.notes)
        if self.unconstrained:
            out["unconstrained"] = [f"{la}.{h}" for la, h in self.unconstrained]
        if self.properties:
            out["properties"] = {k: list(v) for k, v in self.properties.items()}
        return out


def _head(text: str | list | tuple) -> Head:
    try:
        if isinstance(text, str):
            la, h = text.split(".")
            return int(la), int(h)
        return int(text[0]), int(text[1])
    except (ValueError, TypeError, IndexError):
        raise CircuitError(f"a head is written 'L.H' (e.g. '7.3') or [layer, head], got {text!r}") from None


def write_circuit(circuit: Circuit, model_dir: Path | str, description: str = "") -> Path:
    """``circuit.json`` beside the weights (components per class, and how they were imposed)."""
    path = Path(model_dir) / CIRCUIT_FILE
    payload = {**circuit.to_dict(), "description": description}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_circuit(model_dir: Path | str) -> Circuit | None:
    """The organism's circuit, or None for a model without one (not checked against the model:
    :func:`check_circuit_file` does that)."""
    path = Path(model_dir) / CIRCUIT_FILE
    if not path.exists():
        return None
    return Circuit.from_config(json.loads(path.read_text()))


def check_circuit_file(model_dir: Path | str) -> Circuit | None:
    """The circuit of a model directory, checked: valid JSON, a known kind with known classes, and
    only components the model (its ``config.json``) has. None when the directory has no
    ``circuit.json``. Raises :class:`CircuitError` naming the file and the fix."""
    model_dir = Path(model_dir)
    path = model_dir / CIRCUIT_FILE
    if not path.exists():
        return None
    fix = (
        f"correct {path} (kinds and classes: patchbench.toy.circuit.KINDS; components within the "
        "model's config.json) or retrain the organism (snakemake --cores 2 train_organisms)"
    )
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise CircuitError("the top level is not a mapping")
        circuit = Circuit.from_config(data)
        cfg = json.loads((model_dir / "config.json").read_text())
        circuit.check_shape(int(cfg["n_layers"]), int(cfg["n_heads"]))
    except (json.JSONDecodeError, CircuitError, KeyError, FileNotFoundError) as err:
        detail = f"is not valid JSON ({err})" if isinstance(err, json.JSONDecodeError) else str(err)
        if isinstance(err, KeyError | FileNotFoundError):
            detail = f"cannot be checked against the model: {model_dir}/config.json lacks {err}"
        raise CircuitError.of(f"circuit file {path}", detail, fix) from None
    return circuit
