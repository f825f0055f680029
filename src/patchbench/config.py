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

from patchbench.errors import InputError, MissingInputError

__all__ = [
    "SCHEMA",
    "ConfigError",
    "default",
    "load_config",
    "read_yaml",
    "schema",
    "validate_config",
    "validate_entry",
]

#: The config schema (JSON Schema 2020-12 in YAML), shipped inside the package.
SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(InputError, ValueError):
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
    _check_names(cfg)
    _check(cfg, schema(), "invalid config")
    _check_references(cfg)
    return cfg


#: The config sections whose keys become parts of output paths, and what each key names.
_NAMED_SECTIONS = {"models": "model", "tasks": "task", "experiments": "experiment"}


def _check_names(cfg: Any) -> None:
    """Refuse a model, task or experiment name that is no safe path component (:func:`patchbench.layout.check_name`),
    before the schema, whose pattern message would say less."""
    from patchbench.layout import PathNameError, check_name

    for section, what in _NAMED_SECTIONS.items():
        entries = cfg.get(section) if isinstance(cfg, dict) else None
        for name in entries if isinstance(entries, dict) else ():
            try:
                check_name(
                    name, f"config key '{section}': {what} name", fix=f"rename the {what} under `{section}:`"
                )
            except PathNameError as err:
                raise ConfigError(str(err)) from None


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"{key_node.start_mark.name}, line {line}: key {key!r} is given twice in one mapping (first on "
                f"line {seen[key]}); YAML would silently keep only the last one. Fix: remove or rename one of them"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error or a duplicate key is a ConfigError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError.of(
            f"config file {path}",
            "does not exist" if not path.exists() else "is not a file",
            "pass one of config/*.yaml",
        )
    loader = _StrictLoader(path.read_text())
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: YAML syntax error: {err.problem or err}"
            f"{' (' + err.context + ')' if err.context else ''}. Fix: correct the YAML there (indentation, "
            "a missing ':' or closing bracket, tabs instead of spaces)"
        ) from None
    finally:
        loader.dispose()


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (:func:`read_yaml`) and :func:`validate_config` it."""
    cfg = read_yaml(path)
    if cfg is not None and not isinstance(cfg, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of keys, got {type(cfg).__name__}"
        )
    return validate_config(cfg or {})


def _check_tasks(cfg: Mapping[str, Any]) -> None:
    """A task without a ``file`` is a built-in task; a task with one does not take a built-in name."""
    builtin = schema()["$defs"]["task_name"]["enum"]
    for name, entry in cfg["tasks"].items():
        if entry.get("file") is None and name not in builtin:
            raise ConfigError(
                f"config key 'tasks.{name}': {name!r} is not a built-in task ({', '.join(builtin)}). Fix: to read "
                f"your own prompt pairs from a file, write `{name}: {{file: path/to/pairs.csv}}` (columns clean, "
                "corrupted, answer, wrong; config/README.md), or use a built-in task's name"
            )
        if entry.get("file") is not None and name in builtin:
            raise ConfigError(
                f"config key 'tasks.{name}': a task read from a file may not take the built-in task's name {name!r}. "
                f"Fix: rename it (e.g. my_{name}) and the experiments' `task:` with it"
            )


def _check_references(cfg: Mapping[str, Any]) -> None:
    _check_tasks(cfg)
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
