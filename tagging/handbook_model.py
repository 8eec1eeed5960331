"""The User Interest Handbook as data: a versioned, human-editable YAML document.

Per note category, the interest dimensions users care about, each with weighted values (and their
synonyms and example notes). The builder (:mod:`tagging.handbook`) writes it; a person may edit it;
:func:`load_handbook` validates an edited file and reports the exact field that is wrong.

Example::

    schema_version: 1
    version: hb-3f2a9c1e          # content hash; changes whenever the content changes
    built_from: runs/demo
    boilerplate: [fyp, viral]
    categories:
      sneakers:
        description: Sneaker notes
        dimensions:
          - name: colour
            description: Colourway of the shoe
            values:
              - {value: cream white, weight: 0.82, synonyms: [off-white], examples: [n000123]}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.errors import ConfigError, NotFoundError
from features.io import atomic_path

__all__ = ["Dimension", "DimensionValue", "Handbook", "HandbookSection", "load_handbook", "save_handbook"]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DimensionValue(_Model):
    value: str = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0.0)
    synonyms: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()


class Dimension(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    values: tuple[DimensionValue, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_values(self) -> Dimension:
        seen: set[str] = set()
        for v in self.values:
            for form in (v.value, *v.synonyms):
                key = form.strip().lower()
                if key in seen:
                    raise ValueError(f"value or synonym {form!r} appears twice in dimension {self.name!r}")
                seen.add(key)
        return self


class HandbookSection(_Model):
    description: str = ""
    dimensions: tuple[Dimension, ...] = ()

    @field_validator("dimensions")
    @classmethod
    def _unique_dimensions(cls, dims: tuple[Dimension, ...]) -> tuple[Dimension, ...]:
        names = [d.name for d in dims]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dimension names must be unique within a category; repeated: {dup}")
        return dims

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)


class Handbook(_Model):
    schema_version: int = SCHEMA_VERSION
    version: str = ""
    built_from: str = ""
    boilerplate: tuple[str, ...] = ()
    categories: dict[str, HandbookSection]

    def content_hash(self) -> str:
        """A hash of the content (everything but ``version``), used as the version string."""
        payload = self.model_dump(mode="json", exclude={"version"})
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return f"hb-{digest[:10]}"

    def with_version(self) -> Handbook:
        return self.model_copy(update={"version": self.content_hash()})

    def figures(self) -> dict[str, Any]:
        """Headline counts: version, categories, dimensions, values, boilerplate phrases."""
        return {
            "version": self.version,
            "categories": len(self.categories),
            "dimensions": sum(len(s.dimensions) for s in self.categories.values()),
            "values": sum(len(d.values) for s in self.categories.values() for d in s.dimensions),
            "boilerplate": len(self.boilerplate),
        }

    def section(self, category: str) -> HandbookSection:
        """The handbook section for ``category`` (an empty section when the category is unknown)."""
        return self.categories.get(category, HandbookSection())


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})"[:300])
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"handbook {path} is invalid: " + "; ".join(parts) + more


def load_handbook(path: str | os.PathLike[str]) -> Handbook:
    """Load and validate a handbook YAML file (possibly hand-edited).

    The ``version`` field is recomputed from the content, so an edited handbook gets a new version
    (and caches keyed on it are invalidated).

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: the YAML does not parse or a field is invalid; the message gives the field path.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"handbook {path} does not exist; build one with `tagllm tag handbook`")
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"handbook {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"handbook {path}: expected a mapping with 'categories', got {type(raw).__name__}")
    if raw.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ConfigError(
            f"handbook {path}: schema_version {raw.get('schema_version')!r} is not supported; "
            f"expected {SCHEMA_VERSION}"
        )
    try:
        handbook = Handbook.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc
    return handbook.with_version()


def save_handbook(handbook: Handbook, path: str | os.PathLike[str]) -> Path:
    """Write ``handbook`` as YAML atomically (with its content version)."""
    handbook = handbook.with_version()
    data = handbook.model_dump(mode="json")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
