"""The value types of the ``patchbench`` console script's flags (:mod:`patchbench.cli`).

Each parses one flag's text and refuses a bad value with argparse's usage message (an
``ArgumentTypeError``, exit status 2) before anything loads: layer / head lists, numbers checked
against the config schema's rule for the same key (:func:`schema_value`), corruption values
against the corruption registry, names that become part of file paths.
"""

from __future__ import annotations

import argparse

__all__ = ["corruption", "heads", "ints", "nonnegative", "path_name", "schema_node", "schema_value"]


def path_name(flag: str):
    """An argparse type: a name that becomes part of file paths (:func:`patchbench.layout.check_name`)."""

    def parse(text: str) -> str:
        from patchbench.layout import PathNameError, check_name

        try:
            return check_name(text, flag)
        except PathNameError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "name"
    return parse


def heads(text: str) -> tuple[tuple[int, int], ...]:
    try:
        heads = tuple((int(a), int(b)) for a, b in (h.split(".") for h in text.split(",")))
    except ValueError:
        heads = ()
    if not heads or any(a < 0 or b < 0 for a, b in heads):
        raise argparse.ArgumentTypeError(f"expects L.H,L.H,... (e.g. 7.3,7.9), got {text!r}")
    return heads


def ints(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(
            f"expects comma-separated layer indices >= 0 (e.g. 0,1,2), got {text!r}"
        )
    return out


def schema_node(key: str) -> dict:
    """The config schema's rule for ``key``: a dotted path from the top level or an entry kind
    (``noise.nu``, ``model.dtype``); ``items`` steps into an array's items."""
    from patchbench.config import schema

    head, *rest = key.split(".")
    root = schema()
    node = root["$defs"][head] if head in root["$defs"] else root["properties"][head]
    for part in rest:
        node = node["items"] if part == "items" else node["properties"][part]
    return node


def schema_value(key: str, kind: type):
    """An argparse type: ``kind(text)`` checked against the config schema's rule for ``key``."""

    def parse(text: str):
        from jsonschema import Draft202012Validator

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {kind.__name__}, got {text!r}") from None
        rule = {k: v for k, v in schema_node(key).items() if k != "default"}
        error = next(Draft202012Validator(rule).iter_errors(value), None)
        if error is not None:
            raise argparse.ArgumentTypeError(
                f"{error.message} (the rule of config key {key}, config/README.md)"
            )
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def corruption(text: str) -> str:
    """A corruption value of the registry (``gn``, ``gn@nu=1``), checked with its settings."""
    from patchbench.interventions.corruptions import parse

    try:
        parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expects a number >= 0, got {text!r}")
    return value
