"""Patch targets: *what* a sweep patches, independent of *how* it is run.

A sweep is described by a :class:`SweepSpec` (corruption, site, position mode, window, heads,
layers, direction, the corruption's settings, memory budget). :func:`enumerate_targets` turns it
into a list of :class:`PatchTarget`, each one patched run per prompt. A target is nothing but a
set of ``(hook point, head selection, position selection)`` triples: the engine
(:mod:`patchbench.engine.patch`) builds one boolean mask per hook point from them
(:mod:`patchbench.engine.masks`) and replaces the masked part of the activation with the source
run's activation (``torch.where``), so a single code path serves every site.

The sites, their hook points and axes are the registry :data:`patchbench.interventions.sites.SITES`;
the corruptions and directions are :mod:`patchbench.interventions.corruptions` and
:mod:`patchbench.interventions.directions`. One target per site unit (head or layer) and position:
a head site restricted by ``heads`` patches those heads one by one, except a site whose heads are
patched jointly (``head_v``: the chosen heads' values together form ONE target, the paper's
S-inhibition experiment, §3.2); a site with windows patches the layers
``[max(0, l - w//2), min(L, l + ceil(w/2)))`` of a window w at layer l (ROME).

Positions: ``"all"`` patches every position at once; ``"each"`` makes one target per absolute
position (0 .. max_len-1, as TransformerLens's ``*_by_pos`` functions do); any other string is a
named position of the PromptSet (``positions[NAME]``, one index per prompt). A pattern's position
is its destination row.

Layers and heads are 0-indexed; heads are named ``L.H``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from patchbench.config import default
from patchbench.interventions import corruptions, directions
from patchbench.interventions.corruptions.gn import NoiseSpec
from patchbench.interventions.sites import SITES as SITE_TABLE
from patchbench.interventions.sites import site as site_of

if TYPE_CHECKING:  # pragma: no cover
    from patchbench.interventions.corruptions import Corruption
    from patchbench.lm import LMShape

__all__ = [
    "SITES",
    "HOOKS",
    "WINDOW_SITES",
    "SweepSpec",
    "PatchTarget",
    "HookPatch",
    "check_windows",
    "window_layers",
    "enumerate_targets",
    "head_axis",
    "hook_name",
]

#: Site names, in registry order (:data:`patchbench.interventions.sites.SITES`).
SITES = tuple(SITE_TABLE)
#: Sites with a sliding window of layers (ROME's causal tracing slides over MLP and attention outputs).
WINDOW_SITES = tuple(s.name for s in SITE_TABLE.values() if s.windows)
#: Hook-point template of each site.
HOOKS = {s.name: s.hook for s in SITE_TABLE.values()}
HEAD_SITES = tuple(s.name for s in SITE_TABLE.values() if s.has_heads)


def check_windows(site: str, windows: Sequence[int], n_layers: int | None = None) -> None:
    """The one rule for window sizes: at least 1, above 1 only on :data:`WINDOW_SITES`, and (given the
    model's ``n_layers``) at most the number of layers.

    Raises ValueError naming the windows and the fix. :class:`SweepSpec`, the config check and the
    pre-flight checks (:mod:`patchbench.preflight`, with the model's ``n_layers``) call it;
    :func:`enumerate_targets` itself clips any window at the model's edges.
    """
    windows = [int(w) for w in windows]
    if any(w < 1 for w in windows):
        raise ValueError(f"window sizes must be >= 1, got {windows}")
    if site not in WINDOW_SITES and any(w != 1 for w in windows):
        raise ValueError(
            f"windows {windows} only apply to site {' / '.join(WINDOW_SITES)}: a window is only defined for "
            f"the {' / '.join(WINDOW_SITES)} site (ROME's sliding window), not for {site!r}; use window 1"
        )
    big = [w for w in windows if n_layers is not None and w > n_layers]
    if big:
        raise ValueError(
            f"window {big[0]} is larger than the model ({n_layers} layers): its targets would patch (almost) "
            f"every layer at once and still be labelled w{big[0]}. Fix: use windows of at most {n_layers}"
        )


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook point of ``site`` at ``layer``."""
    return site_of(site).hook_name(layer)


def head_axis(site: str, shape: LMShape, log: logging.Logger | None = None) -> dict[str, Any] | None:
    """What the head index of a ``site`` sweep names on a model (None for sites without heads).

    A key-value site (``head_v``, ``head_k``) patches **key-value heads**: on a grouped-query model one
    key-value head feeds ``n_heads / n_kv_heads`` query heads, so head ``L.h`` of such a sweep is
    key-value head h (query heads ``h * group .. (h + 1) * group - 1``). Both engines record this
    in every head sweep's metadata; with ``log``, a key-value sweep also says so there.
    """
    s = site_of(site)
    if not s.has_heads:
        return None
    n = s.n_heads(shape)
    kv = s.heads == "kv" and shape.grouped_query
    axis = {"heads": "key-value" if kv else "query", "n_heads": n, "query_heads_per_head": shape.n_heads // n}
    if log is not None and kv:
        log.info(
            "%s on a grouped-query model: head L.h is key-value head h (%d of them per layer), shared by %d "
            "query heads; patching it changes all of them",
            site, n, axis["query_heads_per_head"],
        )  # fmt: skip
    return axis


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: which corruption, which site, which positions, window, heads, layers and direction.

    ``corruption`` is a corruption value of :mod:`patchbench.interventions.corruptions` (``str``,
    ``gn@nu=1``, ``resample``, ...): its overrides are applied here, to ``noise`` (GN) or
    ``settings`` (the other corruptions' settings, their defaults where absent), so a spec always
    holds the settings its sweep runs with.
    """

    corruption: str
    site: str
    position: str = default("experiment.position")
    window: int = 1
    heads: tuple[tuple[int, int], ...] | None = None
    layers: tuple[int, ...] | None = None
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    memory_budget_mb: int = default("model.memory_budget_mb")
    settings: tuple[tuple[str, Any], ...] = ()
    direction: str = directions.DEFAULT

    def __post_init__(self) -> None:
        try:
            cls, overrides = corruptions.parse(self.corruption)
        except ValueError as err:
            raise ValueError(f"SweepSpec: {err}") from None
        if self.site not in SITE_TABLE:
            raise ValueError(f"SweepSpec: unknown site {self.site!r}; use one of {SITES}")
        try:
            directions.direction(self.direction)
        except ValueError as err:
            raise ValueError(f"SweepSpec: {err}") from None
        if not isinstance(self.position, str) or not self.position:
            raise ValueError(
                f"SweepSpec: position must be 'all', 'each' or a named position, got {self.position!r}"
            )
        try:
            check_windows(self.site, [self.window])
        except ValueError as err:
            raise ValueError(f"SweepSpec: {err}") from None
        if self.heads is not None:
            if self.site not in HEAD_SITES:
                raise ValueError(f"SweepSpec: heads are only meaningful for {HEAD_SITES}, not {self.site!r}")
            object.__setattr__(self, "heads", tuple((int(a), int(b)) for a, b in self.heads))
            if not self.heads:
                raise ValueError("SweepSpec: heads=() selects nothing; pass None for all heads")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        for what, items in (("heads", self.heads), ("layers", self.layers)):
            twice = sorted({x for x in items or () if list(items).count(x) > 1})
            if twice:
                raise ValueError(
                    f"SweepSpec: {what} {[list(x) if isinstance(x, tuple) else x for x in twice]} are given more "
                    f"than once; a repeated target would enter the 2-SD statistics twice. Fix: list each once"
                )
        noise = NoiseSpec(**self.noise) if isinstance(self.noise, Mapping) else self.noise
        settings = dict(self.settings.items() if isinstance(self.settings, Mapping) else self.settings)
        try:
            if cls.noise:
                if settings:
                    raise ValueError(f"{cls.name} takes its settings from `noise`, not settings {settings}")
                noise = replace(noise, **overrides)
                settings = {}
            else:
                settings = cls.of({**settings, **overrides}).settings()
        except (TypeError, ValueError) as err:
            raise ValueError(f"SweepSpec: corruption {self.corruption!r}: {err}") from None
        object.__setattr__(self, "noise", noise)
        object.__setattr__(self, "settings", tuple(sorted(settings.items())))
        if self.memory_budget_mb <= 0:
            raise ValueError(f"SweepSpec: memory_budget_mb must be positive, got {self.memory_budget_mb}")

    @property
    def intervention(self) -> Corruption:
        """The corruption with the settings this sweep runs with."""
        cls, _ = corruptions.parse(self.corruption)
        return cls.of(asdict(self.noise) if cls.noise else dict(self.settings))

    @property
    def label(self) -> str:
        """``corruption/site pos=position w=window`` (log messages; `` noising`` for that direction)."""
        d = "" if self.direction == directions.DEFAULT else f" {self.direction}"
        return f"{self.corruption}/{self.site} pos={self.position} w={self.window}{d}"

    @property
    def n_samples(self) -> int:
        """Noise samples per prompt (1 for a corruption without noise)."""
        return self.intervention.n_samples

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready facts (frame metadata, fingerprints). ``noise`` is None for a corruption
        that draws none, so that its facts do not change with the noise settings; ``settings`` and
        ``direction`` appear only when the corruption has settings / the direction is not the default
        (so a denoising STR or GN sweep records exactly the facts it always did)."""
        d = asdict(self)
        d["noise"] = d["noise"] if corruptions.parse(self.corruption)[0].noise else None
        d["heads"] = None if self.heads is None else [list(h) for h in self.heads]
        d["layers"] = None if self.layers is None else list(self.layers)
        del d["settings"]
        if self.settings:
            d["settings"] = dict(self.settings)
        if self.direction == directions.DEFAULT:
            del d["direction"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        d = dict(d)
        if d.get("heads") is not None:
            d["heads"] = tuple(tuple(h) for h in d["heads"])
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        if isinstance(d.get("noise"), dict):
            d["noise"] = NoiseSpec(**d["noise"])
        elif "noise" in d and d["noise"] is None:  # a corruption without noise settings
            del d["noise"]
        if d.get("settings") is not None:
            d["settings"] = tuple(sorted(d["settings"].items()))
        return cls(**d)


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Half-open layer span ``[a, b)`` of a window of size ``window`` centred at ``layer`` (ROME)."""
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is outside the model (n_layers={n_layers})")
    return max(0, layer - window // 2), min(n_layers, layer + math.ceil(window / 2))


@dataclass(frozen=True)
class HookPatch:
    """Part of one target: patch ``heads`` (None = whole activation) at ``position`` of hook ``hook``.

    ``position`` is -1 for every position, an absolute index >= 0, or a named position (str) that
    the engine resolves per prompt.
    """

    hook: str
    layer: int
    heads: tuple[int, ...] | None
    position: int | str


@dataclass(frozen=True)
class PatchTarget:
    """One patched run per prompt: the union of its :class:`HookPatch` parts."""

    id: int
    site: str
    layer: int
    layers: tuple[int, int]
    head: int
    position: int | str
    window: int
    patches: tuple[HookPatch, ...]
    component: str

    @property
    def start_layer(self) -> int:
        """First layer whose input differs from the corrupted run: patched runs start here."""
        return min(p.layer for p in self.patches)

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.hook for p in self.patches))


def _pos_suffix(position: int | str) -> str:
    return "" if position == -1 else f"@{position}"


def enumerate_targets(spec: SweepSpec, n_layers: int, n_heads: int, max_len: int) -> list[PatchTarget]:
    """All patch targets of ``spec`` on a model with ``n_layers`` x ``n_heads`` and prompts of ``max_len``.

    Order: by start layer, then head, then position (the engine groups consecutive targets that
    share a start layer into one batch).
    """
    layers = tuple(range(n_layers)) if spec.layers is None else spec.layers
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ValueError(f"SweepSpec.layers {bad} are outside the model (n_layers={n_layers})")
    if spec.position == "all":
        positions: list[int | str] = [-1]
    elif spec.position == "each":
        positions = list(range(max_len))
    else:
        positions = [spec.position]
    if spec.heads is not None:
        bad_h = [h for h in spec.heads if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads)]
        if bad_h:
            raise ValueError(
                f"SweepSpec.heads {bad_h} are outside the model ({n_layers} layers x {n_heads} heads)"
            )

    raw: list[dict[str, Any]] = []
    site = spec.site
    info = site_of(site)

    def add(layer: int, layers: tuple[int, int], head: int, pos, window: int, parts, name: str) -> None:
        target = dict(layer=layer, layers=layers, head=head, position=pos, window=window, patches=parts)
        raw.append(dict(site=site, **target, component=name + _pos_suffix(pos)))

    if info.joint_heads and spec.heads is not None:
        # One target: all chosen heads together (S-inhibition heads' values, paper §3.2).
        by_layer: dict[int, list[int]] = {}
        for lay, h in spec.heads:
            by_layer.setdefault(lay, []).append(h)
        lo, hi = min(by_layer), max(by_layer) + 1
        name = "+".join(f"{lay}.{h}" for lay, h in spec.heads)
        for pos in positions:
            parts = tuple(
                HookPatch(hook_name(site, lay), lay, tuple(sorted(hs)), pos)
                for lay, hs in sorted(by_layer.items())
            )
            add(lo, (lo, hi), -1, pos, 1, parts, name)
    elif info.has_heads:
        pairs = (
            [(lay, h) for lay in layers for h in range(n_heads)] if spec.heads is None else list(spec.heads)
        )
        for lay, h in pairs:
            for pos in positions:
                parts = (HookPatch(hook_name(site, lay), lay, (h,), pos),)
                add(lay, (lay, lay + 1), h, pos, 1, parts, f"{lay}.{h}")
    else:
        for lay in layers:
            a, b = window_layers(lay, spec.window, n_layers) if info.windows else (lay, lay + 1)
            for pos in positions:
                parts = tuple(HookPatch(hook_name(site, x), x, None, pos) for x in range(a, b))
                add(lay, (a, b), -1, pos, spec.window, parts, f"{lay}")
    raw.sort(key=lambda r: min(p.layer for p in r["patches"]))  # stable: keeps head / position order
    return [PatchTarget(id=i, **r) for i, r in enumerate(raw)]
