"""The one interface every corruption implements (see :mod:`patchbench.interventions.corruptions`).

A corruption is a small frozen dataclass: its fields are its *settings* (GN's noise, resample's
seed, mean's reference set), resolved from the config section it names (:attr:`Corruption.section`)
and the overrides of a config value such as ``gn@nu=1``. It says

* **what it is**: :attr:`~Corruption.name` (its config value and module name), :attr:`~Corruption.label`
  (tables and figures), :attr:`~Corruption.kind` (``tokens``: the corrupted run reads other token
  ids and/or adds embedding noise; ``activations``: the corrupted run is the clean prompt with
  the sweep's patched activations replaced);
* **which settings enter its fingerprint** (:meth:`~Corruption.spec_facts`, recorded in the
  SweepSpec and so in every frame's metadata and checkpoint fingerprint; :meth:`~Corruption.config_facts`,
  what of the config enters a Cell's fingerprint);
* **what is wrong with an input** before any work (:meth:`~Corruption.check_config`,
  :meth:`~Corruption.check`), as an :class:`~patchbench.errors.InputError` naming key, problem and fix;
* **how the corrupted run is made** (:meth:`~Corruption.corrupted_run`: a
  :class:`patchbench.engine.runs.Run` and the facts its frames' metadata record).

Modules of this package import no torch at import time (the config schema and the analysis read
the registry); the engine-side code imports it when it runs.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from patchbench.errors import InputError

__all__ = ["Corruption", "CorruptionError"]


class CorruptionError(InputError, ValueError):
    """A corruption that cannot run on its inputs (the message names the key, the problem and the fix)."""


@dataclass(frozen=True)
class Corruption:
    """Base of every corruption (see the module docstring). Subclasses are frozen dataclasses whose
    fields are their settings, each with its default."""

    #: config value and module name
    name: ClassVar[str] = ""
    #: how tables and figures name it
    label: ClassVar[str] = ""
    kind: ClassVar[Literal["tokens", "activations"]] = "tokens"
    #: the top-level config section holding its settings' defaults (None: it has no settings)
    section: ClassVar[str | None] = None
    #: its corrupted run adds embedding noise (its settings are then the spec's ``noise``)
    noise: ClassVar[bool] = False
    #: its noise samples per prompt
    n_samples: ClassVar[int] = 1
    #: one line for the docs and ``--help``
    summary: ClassVar[str] = ""
    #: one of the two corruptions Zhang & Nanda compare (the paper's tables always show its rows)
    in_paper: ClassVar[bool] = False

    # ------------------------------------------------------------------ settings
    @classmethod
    def setting_types(cls) -> dict[str, type]:
        """Its settings and their types (the dataclass fields)."""
        hints = typing.get_type_hints(cls)
        out: dict[str, type] = {}
        for f in dataclasses.fields(cls):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            out[f.name] = args[0] if args else hints[f.name]
        return out

    @classmethod
    def parse_value(cls, key: str, text: str) -> Any:
        """One override's value, typed by its setting (``none`` is None for optional settings)."""
        kind = cls.setting_types().get(key)
        if kind is None:
            known = ", ".join(cls.setting_types()) or "none"
            raise ValueError(f"{cls.name} has no setting {key!r} (its settings: {known})")
        if text.lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{cls.name} setting {key!r} expects {kind.__name__}, got {text!r}") from None

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None = None) -> Corruption:
        """The corruption with ``settings`` (unknown keys refused; missing ones take their defaults)."""
        settings = dict(settings or {})
        known = list(cls.setting_types())
        unknown = [k for k in settings if k not in known]
        if unknown:
            names = ", ".join(known) or "none"
            raise ValueError(f"{cls.name} has no setting {unknown[0]!r} (its settings: {names})")
        return cls(**settings)

    @classmethod
    def section_schema(cls) -> dict[str, Any]:
        """The JSON schema of its config section: its settings, typed, with their defaults."""
        json_types = {int: "integer", float: "number", str: "string", bool: "boolean"}
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            optional = type(None) in typing.get_args(hints[f.name])
            kind = json_types[cls.setting_types()[f.name]]
            props[f.name] = {"type": [kind, "null"] if optional else kind, "default": f.default}
        return {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "description": f"settings of the {cls.label} corruption ({cls.summary}); a value such as "
            f"{cls.name}@key=value overrides them for one cell",
            "properties": props,
        }

    def reference_task(self) -> str | None:
        """The task whose prompts it reads beside the swept ones (a named reference set), if any."""
        return None

    def settings(self) -> dict[str, Any]:
        """Its settings as JSON-ready facts."""
        return dataclasses.asdict(self)

    def spec_facts(self) -> dict[str, Any] | None:
        """The settings a SweepSpec records for it (metadata, checkpoint fingerprints); None when it has
        none (so that its sweeps' facts do not change with other corruptions' settings)."""
        return self.settings() or None

    @classmethod
    def config_facts(cls, config: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        """What of a validated config enters a Cell's fingerprint for it: its config section."""
        return {} if cls.section is None else {cls.section: config[cls.section]}

    @classmethod
    def check_config(cls, settings: Mapping[str, Any], config: Mapping[str, Any], where: str) -> None:
        """Refuse settings that cannot work with this config (raise CorruptionError naming ``where``)."""

    # ------------------------------------------------------------------ inputs and runs
    def check(self, prompts: Any, reference: Any = None, *, where: str = "") -> None:
        """Refuse prompts this corruption cannot corrupt (CorruptionError naming ``where``, the problem and
        the fix); ``reference`` is a named reference prompt set where the corruption takes one."""

    def corrupted_run(self, ctx: Any) -> tuple[Any, dict[str, Any]]:
        """The sweep's corrupted run (a :class:`patchbench.engine.runs.Run`) from a
        :class:`patchbench.engine.runs.RunContext`, and the facts its frames' metadata record."""
        raise NotImplementedError

    def describe(self, facts: Mapping[str, Any]) -> str:
        """One log line about the corrupted run a sweep built (``facts`` from :meth:`corrupted_run`), or ""."""
        return ""

    def fingerprint_facts(self, ctx: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Facts beyond the SweepSpec that fix the corrupted run's numbers (joining the checkpoint
        fingerprint only when not empty): e.g. a reference prompt set's digest."""
        return {}


#: The per-prompt metadata column naming a prompt's template: resample and mean ablation take other
#: prompts of the same template (and token length) from it.
TEMPLATE_COLUMN = "template"


def template_groups(prompts: Any, *, corruption: str, what: str = "") -> dict[tuple[str, int], list[int]]:
    """The prompts by (template, token length), each group's indices in prompt order.

    Refuses (CorruptionError naming ``corruption`` and the fix) a prompt set whose metadata names no
    template (:data:`TEMPLATE_COLUMN`)."""
    what = what or f"prompt set {prompts.task!r}"
    if TEMPLATE_COLUMN not in prompts.meta.columns:
        raise CorruptionError.of(
            f"corruption {corruption!r} on {what}",
            f"its prompts record no template (metadata column {TEMPLATE_COLUMN!r}), so there is no set of "
            "prompts of the same template to take the corrupted run from",
            f"give each prompt a `{TEMPLATE_COLUMN}` in its task's metadata, or use str / gn / zero",
        )
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (t, n) in enumerate(zip(prompts.meta[TEMPLATE_COLUMN].astype(str), prompts.lengths, strict=True)):
        groups.setdefault((t, int(n)), []).append(i)
    return groups
