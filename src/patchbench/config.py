"""The validated config: one schema with every default, one validator, one set of cross-checks.

The schema (``patchbench/schemas/config.schema.yaml``, shipped with the package) is the only place
a config default is written. :func:`validate_config` checks a config against it, fills in every
default (in place, as Snakemake's ``validate`` does) and then checks the references between
sections that a schema cannot express (an experiment naming a model or task that is not defined).
The per-site rules of an experiment (windows, heads) are checked where experiments become sweep
cells, :func:`patchbench.cell.cells_of`. The workflow (``workflow/rules/common.smk``), its scripts (through rule params) and
the CLI all read the config this returns, so none of them supplies a default of its own;
:func:`default` reads one schema default for code that has no config at hand (the Python API's
dataclass defaults, the CLI's options).

    cfg = load_config("config/demo.yaml")        # validated, defaults filled in
    default("experiment.position")               # 'all'
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SCHEMA", "ConfigError", "default", "load_config", "schema", "validate_config", "validate_entry"]

#: The config schema (JSON Schema 2020-12 in YAML), shipped inside the package.
SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config the workflow cannot run: the message names the key, the problem and the fix."""


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed schema (cached; treat as read-only)."""
    return yaml.safe_load(SCHEMA.read_text())


def _validator(subschema: Mapping[str, Any]):
    """A Draft 2020-12 validator that fills in ``default`` values while it validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch) -> Iterator[Any]:
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, sch)

    cls = validators.extend(base, {"properties": set_defaults})
    return cls({**subschema, "$defs": schema()["$defs"]})  # local "#/$defs/..." references resolve


def _where(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"config key {path!r}" if path else "config"


def _check(instance: Any, subschema: Mapping[str, Any], what: str) -> None:
    errors = sorted(_validator(subschema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(
            f"{what}: {_where(e)}: {e.message}; see config/README.md for the allowed values"
            + (f" ({len(errors) - 1} more error(s))" if len(errors) > 1 else "")
        )


def validate_entry(kind: str, entry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of one entry (``model``, ``task``, ``experiment``) checked against its schema, defaults filled."""
    defs = schema()["$defs"]
    if kind not in defs:
        raise KeyError(f"no schema for {kind!r}; known: {sorted(defs)}")
    out = copy.deepcopy(dict(entry or {}))
    _check(out, defs[kind], f"{kind} entry")
    return out


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` against the schema, fill in its defaults (in place) and check its references.

    Returns ``cfg``. Raises :class:`ConfigError` naming the first offending key.
    """
    _check(cfg, schema(), "invalid config")
    _check_references(cfg)
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and :func:`validate_config` it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; pass one of config/*.yaml")
    return validate_config(yaml.safe_load(path.read_text()) or {})


def _check_references(cfg: Mapping[str, Any]) -> None:
    models, tasks = set(cfg["models"]), set(cfg["tasks"])
    for name, exp in cfg["experiments"].items():
        for m in exp["models"]:
            if m not in models:
                raise ConfigError(
                    f"experiment {name!r}: unknown model {m!r}; define it under `models:` "
                    f"(defined: {sorted(models)})"
                )
        if exp["task"] not in tasks:
            raise ConfigError(
                f"experiment {name!r}: task {exp['task']!r} has no entry under `tasks:` "
                f"(defined: {sorted(tasks)}); add `{exp['task']}: {{n_prompts: N}}`"
            )


def default(key: str) -> Any:
    """The schema default of ``key``: a dotted path from the top level (``noise.nu``) or from an
    entry kind (``experiment.position``, ``model.memory_budget_mb``). Raises KeyError if it has none."""
    head, *rest = key.split(".")
    root = schema()
    node = root["$defs"][head] if head in root["$defs"] else root["properties"][head]
    for part in rest:
        node = node["properties"][part]
    if "default" not in node:
        raise KeyError(f"the config schema gives {key!r} no default")
    return copy.deepcopy(node["default"])
