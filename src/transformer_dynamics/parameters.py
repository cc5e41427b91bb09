"""A notebook's parameters as their annotations say: lists given as text (papermill ``-p NAME a,b`` or
``-p NAME "[0.1, 0.5]"``) become lists, so ``-p`` works like ``-y`` in every chapter.

Every parameters cell annotates its names (``NOISE_SCALES: list[float] = [0.1, 0.5, 1.0]``); papermill's
``--help-notebook`` shows these types and the one-line comments.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml

__all__ = ["as_list", "coerce", "coerce_namespace"]

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
