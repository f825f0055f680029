"""The direction registry: which run a patch goes into, and how its effect is signed.

==========  ==================  ====================================  ====  =====================
direction   base run (patched)  source of the patched activations     sign  label suffix
==========  ==================  ====================================  ====  =====================
denoising   the corrupted run   the clean run                         +1    (none)
noising     the clean run       the corrupted (or ablated) run        -1    `` (noising)``
==========  ==================  ====================================  ====  =====================

Denoising asks whether restoring a component is *sufficient* to bring the clean behaviour back;
noising whether corrupting it is *necessary* to keep it (Heimersheim & Nanda 2024). Every metric
of :mod:`patchbench.metrics` is one formula ``f(patched run, base run)``, multiplied by the
direction's sign, with the logit difference's denominator ``LD_cl - LD_*`` in both directions;
so an effect of 1 means the patch moves the output across the whole clean-minus-corrupted
difference (denoising: all the way back to clean; noising: all the way down to corrupted).

A cell's files, labels, metadata and fingerprint name its direction only when it is not
:data:`DEFAULT` (denoising), so a denoising cell is exactly what it was before directions existed;
its *intervention key* (:func:`key`: the corruption, suffixed ``_noising`` for noising) names the
corruption folder of its files and the ``corruption`` column of its effects frame.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT", "DIRECTIONS", "Direction", "direction", "key", "split_key"]


@dataclass(frozen=True)
class Direction:
    """One direction: its base run, its sign and how names carry it."""

    name: str
    base: str  # the run the patch goes into: "corrupted" or "clean"
    sign: int
    suffix: str  # appended to the corruption in intervention keys ("" for the default)
    label_suffix: str  # appended to the corruption's label

    @property
    def source(self) -> str:
        """The run whose activations are patched in."""
        return "clean" if self.base == "corrupted" else "corrupted"


_DIRECTIONS = (
    Direction("denoising", base="corrupted", sign=1, suffix="", label_suffix=""),
    Direction("noising", base="clean", sign=-1, suffix="_noising", label_suffix=" (noising)"),
)

#: Every direction by name.
DIRECTIONS: dict[str, Direction] = {d.name: d for d in _DIRECTIONS}
#: The direction of a sweep that names none (the paper's).
DEFAULT = "denoising"


def direction(name: str | None) -> Direction:
    """The registry row of ``name`` (None: :data:`DEFAULT`); ValueError naming the known ones otherwise."""
    try:
        return DIRECTIONS[name or DEFAULT]
    except KeyError:
        raise ValueError(f"unknown direction {name!r}; use one of {', '.join(DIRECTIONS)}") from None


def key(corruption: str, name: str | None = None) -> str:
    """The intervention key of a corruption in a direction: ``str``, ``str_noising``, ``gn@nu=1_noising``."""
    return f"{corruption}{direction(name).suffix}"


def split_key(value: str) -> tuple[str, str]:
    """``(corruption, direction)`` of an intervention key (the inverse of :func:`key`)."""
    for d in _DIRECTIONS:
        if d.suffix and value.endswith(d.suffix):
            return value[: -len(d.suffix)], d.name
    return value, DEFAULT
