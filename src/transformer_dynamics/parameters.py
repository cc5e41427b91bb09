"""A notebook's parameters as their annotations say: lists given as text (papermill ``-p NAME a,b`` or
``-p NAME "[0.1, 0.5]"``) become lists, so ``-p`` works like ``-y`` in every chapter; then every value is
checked against its annotation and, for counts, its range (:func:`check`), before any work.

Every parameters cell annotates its names (``NOISE_SCALES: list[float] = [0.1, 0.5, 1.0]``); papermill's
``--help-notebook`` shows these types and the one-line comments. Which names are counts (positive integers; a
seed: >= 0) is one rule, :func:`count_range`, shared by the notebooks' check and the run profiles' loader.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml

__all__ = ["as_list", "coerce", "coerce_namespace", "COUNT", "count_range", "check_count", "check",
           "check_namespace"]

# Parameters that are counts (texts, seeds, epochs, shuffles, units, threads, k…): integers, a list of them, or
# None where the annotation allows it. A seed may be 0; every other count is at least 1.
COUNT = re.compile(r"^(N|SEED|N_\w+|GRID_N|BATCH_SIZE|\w+_(EPOCHS|LAYERS|PATIENCE|UNITS|COMPONENTS|SHUFFLES|"
                   r"TEXTS|BOOT|SEED|THREADS|K|ITER))$")
_SEED = re.compile(r"^(\w+_)?SEED$")

_ITEM_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def as_list(value: Any, item: type = str) -> list[Any]:
    """``value`` as a list of ``item``: a list/tuple as it is, text as a YAML list (``"[a, b]"``) or
    comma-separated (``"a,b"``), a single value as a one-item list. ValueError names what could not convert."""
    if isinstance(value, str):
        text = value.strip()
        parsed = yaml.safe_load(text) if text.startswith("[") else None
        values = parsed if isinstance(parsed, list) else [s.strip() for s in text.split(",") if s.strip()]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [value]
    out = []
    for v in values:
        if item is str or isinstance(v, item):
            out.append(str(v) if item is str else v)
            continue
        try:
            out.append(item(yaml.safe_load(v)) if isinstance(v, str) else item(v))
        except (TypeError, ValueError):
            raise ValueError(f"{v!r} in {value!r} is not a {item.__name__}; give a list such as "
                             f"[{', '.join(['1', '2'] if item is not str else ['a', 'b'])}]") from None
    return out


def _list_item_type(annotation: Any) -> type | None:
    """``list[float]`` / ``Optional[list[float]]`` (objects or their source text) -> ``float``; else None."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        for wrapper in ("Optional[", "typing.Optional["):
            if text.startswith(wrapper) and text.endswith("]"):
                text = text[len(wrapper):-1]
        text = text.split("|")[0]
        if text.startswith(("list[", "List[")) and text.endswith("]"):
            return _ITEM_TYPES.get(text[5:-1], str)
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return args[0] if args and isinstance(args[0], type) else str
    if origin is typing.Union or (origin is not None and type(None) in args):
        for a in args:
            t = _list_item_type(a)
            if t is not None:
                return t
    return None


def coerce(values: Mapping[str, Any], annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The ``values`` whose annotation is a list type but which arrived as text or a scalar, converted
    (``{name: new_value}``; None stays None)."""
    out = {}
    for name, ann in annotations.items():
        item = _list_item_type(ann)
        if item is None or name not in values or values[name] is None or isinstance(values[name], list):
            continue
        out[name] = as_list(values[name], item)
    return out


def coerce_namespace(namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """Convert a notebook's list parameters in place (annotations from ``namespace["__annotations__"]``);
    returns what changed."""
    changed = coerce(namespace, namespace.get("__annotations__", {}) or {})
    namespace.update(changed)
    return changed


def count_range(name: str) -> int | None:
    """The smallest value the parameter ``name`` takes if it is a count (0 for a seed, else 1), or None if
    ``name`` is not a count (:data:`COUNT`)."""
    if not COUNT.match(name):
        return None
    return 0 if _SEED.match(name) else 1


def check_count(name: str, value: Any, where: str = "") -> Any:
    """``value`` of parameter ``name`` (a list's items one by one) as an int in its count range (16.0 -> 16);
    other names and None pass unchanged. ValueError (one line, prefixed by ``where``) otherwise."""
    low = count_range(name)
    if low is None or value is None:
        return value
    if isinstance(value, list):
        return [check_count(name, v, where) for v in value]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}{name} must be an integer >= {low}, got {value!r} ({type(value).__name__})")
    return value


_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "True or False"}
_PLURAL = {str: "texts", int: "integers", float: "numbers", bool: "True or False values"}


def _parse(annotation: Any) -> tuple[type | None, type | None, bool]:
    """``(base, item, optional)`` of an annotation or its source text: ``Optional[list[int]]`` ->
    ``(list, int, True)``, ``float`` -> ``(float, None, False)``; ``(None, None, True)`` when unknown."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "").replace("typing.", "")
        optional = False
        if text.startswith("Optional[") and text.endswith("]"):
            text, optional = text[9:-1], True
        parts = text.split("|")
        if "None" in parts:
            optional = True
            parts = [p for p in parts if p != "None"]
        text = parts[0] if len(parts) == 1 else ""
        if text.startswith(("list[", "List[")) and text.endswith("]"):
            return list, _ITEM_TYPES.get(text[5:-1]), optional
        return _ITEM_TYPES.get(text, list if text in ("list", "List") else None), None, optional
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return list, args[0] if args and isinstance(args[0], type) else None, False
    if origin is not None and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            base, item, _ = _parse(rest[0])
            return base, item, True
        return None, None, True
    if annotation in _TYPE_NAMES:
        return annotation, None, False
    return None, None, True


def _fits(value: Any, kind: type | None) -> bool:
    if kind is None:
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check(values: Mapping[str, Any], annotations: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Check each of ``values`` that ``annotations`` types: its type (``int``, ``float``, ``str``, ``bool``,
    ``list[...]``, ``Optional[...]``) and, for counts, its range (:func:`check_count`). Returns the values that
    were converted on the way (a whole float where an int is meant). ValueError, one line naming the first
    parameter that does not fit and what it takes, otherwise."""
    out: dict[str, Any] = {}
    for name, ann in annotations.items():
        if name not in values:
            continue
        value = values[name]
        base, item, optional = _parse(ann)
        if value is None:
            if not optional:
                raise ValueError(f"{where}{name} must not be None; give {_TYPE_NAMES.get(base, 'a value')}")
            continue
        if base is int and isinstance(value, float) and value.is_integer():
            value = out[name] = int(value)
        if not _fits(value, base):
            what = f"a list of {_PLURAL.get(item, 'values')}" if base is list else _TYPE_NAMES.get(base, "?")
            raise ValueError(f"{where}{name} must be {what}{' or None' if optional else ''}, got {value!r} "
                             f"({type(value).__name__})")
        if base is list and item is not None:
            bad = [v for v in value if not _fits(v, item)]
            if bad:
                raise ValueError(f"{where}{name} must be a list of {_PLURAL[item]}, but it holds {bad[0]!r} "
                                 f"({type(bad[0]).__name__})")
        if name.endswith("_DIR") and isinstance(value, str) and not value.strip():
            raise ValueError(f"{where}{name} must name a folder, got {value!r}; None takes the default")
        checked = check_count(name, value, where)
        if checked != value or type(checked) is not type(value):
            out[name] = checked
    return out


def check_namespace(namespace: MutableMapping[str, Any], where: str = "") -> dict[str, Any]:
    """:func:`check` a notebook's parameters in place (annotations from ``namespace["__annotations__"]``);
    returns what was converted."""
    changed = check(namespace, namespace.get("__annotations__", {}) or {}, where)
    namespace.update(changed)
    return changed
