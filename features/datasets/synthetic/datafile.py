"""Reading the synthetic generator's package data files (``data/*.yaml``), with checks that name the
file and the key of every malformed entry.

The vocabulary (:mod:`.vocabulary`) and the text templates (:mod:`.phrases`) are data, not code: they
live in ``features/datasets/synthetic/data/`` and are shipped as package data.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from features.errors import DataSourceError

__all__ = ["DataFileError", "default_source", "mapping", "read_data_file", "strings"]

DataSource = Path | Traversable


class DataFileError(DataSourceError):
    """A package data file of the synthetic generator is malformed.

    Attributes:
        file: the file's path.
        key: dotted path of the offending entry (``categories.sneakers.nouns``), or ``""`` for the file.
        expected: what a valid entry looks like.
    """

    def __init__(self, file: str, key: str, value: Any, expected: str) -> None:
        self.file, self.key, self.expected = file, key, expected
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        where = f"key {key!r}" if key else "top level"
        super().__init__(f"{file}: {where}: expected {expected}, got {shown}")


def default_source(name: str) -> Traversable:
    """The packaged data file ``data/<name>``."""
    return resources.files("features.datasets.synthetic").joinpath("data", name)


def read_data_file(source: DataSource) -> tuple[str, Any]:
    """Parse one YAML data file; returns ``(file name for messages, parsed content)``.

    Raises:
        DataFileError: the file is missing or is not valid YAML.
    """
    file = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(file, "", type(exc).__name__, "a readable UTF-8 file") from exc
    try:
        return file, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataFileError(file, "", str(exc).splitlines()[0], "valid YAML") from exc


def strings(raw: Any, file: str, key: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """A list of non-empty strings (non-empty itself unless ``allow_empty``), as a tuple.

    Raises:
        DataFileError: naming ``file`` and ``key`` (``key[i]`` for a bad element).
    """
    if not isinstance(raw, list) or not (raw or allow_empty):
        raise DataFileError(
            file, key, raw, "a list of strings" if allow_empty else "a non-empty list of strings"
        )
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item:
            raise DataFileError(file, f"{key}[{i}]", item, "a non-empty string")
    return tuple(raw)


def mapping(raw: Any, file: str, key: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """A non-empty mapping with string keys; with ``required``, exactly those keys.

    Raises:
        DataFileError: naming ``file`` and ``key`` (``key.missing`` for an absent required key).
    """
    if not isinstance(raw, dict) or not raw or not all(isinstance(k, str) and k for k in raw):
        raise DataFileError(file, key, raw, "a non-empty mapping with string keys")
    if required:
        prefix = f"{key}." if key else ""
        for name in required:
            if name not in raw:
                raise DataFileError(file, prefix + name, None, f"a value (required keys: {list(required)!r})")
        unknown = sorted(set(raw) - set(required))
        if unknown:
            raise DataFileError(
                file, prefix + unknown[0], raw[unknown[0]], f"only the keys {list(required)!r}"
            )
    return raw
