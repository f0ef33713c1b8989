"""Editing a message's wire dict for malformed-input tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DELETE = object()  # as a value in `changes`: remove the field


def edited(wire: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`wire` with `changes` applied in place: 'image.width' names a nested field."""
    for path, value in changes.items():
        target = wire
        *parents, key = path.split(".")
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
    return wire
