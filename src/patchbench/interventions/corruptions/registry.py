"""The corruption registry itself (:data:`NAMES`) and what reads it; see the package docstring.

Kept apart from the package's ``__init__``: importing a corruption module binds its name (``str``
among them) in the package's namespace, where it would hide the builtin.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from patchbench.interventions.corruptions.base import Corruption

#: Every corruption, by config name, in the order tables and figures list them.
NAMES: tuple[str, ...] = ("str", "gn", "resample", "mean", "zero")

_SETTING = r"[a-z_]+=[^,@/\s]+"
#: What a corruption value looks like: a name, optionally ``@key=value[,key=value]``.
ID_PATTERN = rf"(?:{'|'.join(NAMES)})(?:@{_SETTING}(?:,{_SETTING})*)?"


def corruption_class(name: str) -> type[Corruption]:
    """The corruption class of ``name`` (its module's ``CORRUPTION``); ValueError naming the known ones."""
    if name not in NAMES:
        raise ValueError(f"unknown corruption {name!r}; use one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__package__}.{name}").CORRUPTION


def parse(value: str) -> tuple[type[Corruption], dict[str, Any]]:
    """``(class, overrides)`` of a corruption value (``gn@nu=1`` -> GN, ``{'nu': 1.0}``); ValueError
    naming what is wrong."""
    if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a corruption: use one of {', '.join(NAMES)}, optionally with settings "
            "as name@key=value,key=value (e.g. gn@nu=1)"
        )
    name, _, rest = value.partition("@")
    cls = corruption_class(name)
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        if key in overrides:
            raise ValueError(f"{value!r} sets {key!r} twice")
        overrides[key] = cls.parse_value(key, text)
    return cls, overrides


def resolve(value: str, defaults: Mapping[str, Any] | None = None) -> Corruption:
    """The corruption of a value with its settings: ``defaults`` (its config section), then the
    value's overrides."""
    cls, overrides = parse(value)
    known = cls.setting_types()
    base = {k: v for k, v in (defaults or {}).items() if k in known}
    return cls.of({**base, **overrides})


def label(value: str) -> str:
    """How tables and figures name a corruption value (``STR``, ``GN(nu=1)``, its settings as written); a value that is not a
    corruption passes through unchanged (upper-case ``str`` / ``gn`` included)."""
    text = str(value).lower() if str(value).upper() == str(value) else str(value)
    try:
        cls, overrides = parse(text)
    except ValueError:
        return str(value)
    return f"{cls.label}({text.partition('@')[2]})" if overrides else cls.label


def section_schemas() -> dict[str, dict[str, Any]]:
    """The config section of every corruption that has settings: section -> its JSON schema."""
    out: dict[str, dict[str, Any]] = {}
    for name in NAMES:
        cls = corruption_class(name)
        if cls.section is not None:
            out[cls.section] = cls.section_schema()
    return out


def paper() -> tuple[str, ...]:
    """The corruptions the paper compares, in registry order."""
    return tuple(n for n in NAMES if corruption_class(n).in_paper)


def order(label_or_value: str) -> tuple[int, str]:
    """A sort key putting corruption labels (or values) in registry order, variants after their base."""
    text = str(label_or_value)
    for i, name in enumerate(NAMES):
        base = corruption_class(name).label
        if text == name or text.startswith(name + "@") or text == base or text.startswith(base + "("):
            return i, text
    return len(NAMES), text
