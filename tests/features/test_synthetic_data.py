"""The synthetic generator's package data files and their typed loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from features.datasets.synthetic.datafile import DataFileError, default_source
from features.datasets.synthetic.phrases import BOILERPLATE, DIMENSION_PHRASES, load_phrases
from features.datasets.synthetic.taxonomy import build_taxonomy
from features.datasets.synthetic.vocabulary import ITEM_DIMENSIONS, load_vocabulary
from features.errors import DataSourceError


def test_packaged_files_load_into_the_taxonomy() -> None:
    vocab = load_vocabulary()
    taxonomy = build_taxonomy()
    assert [c.name for c in vocab.categories] == list(taxonomy.category_names)
    assert ITEM_DIMENSIONS == vocab.item_dimensions == {"product_type", "gear_type", "dish"}
    book = load_phrases()
    assert book.boilerplate == BOILERPLATE
    # every dimension of the vocabulary has slot phrases; only item dimensions lack caption phrases
    dims = {d for c in vocab.categories for d, _ in c.dimensions}
    assert dims <= set(DIMENSION_PHRASES)
    assert {d for d, s in DIMENSION_PHRASES.items() if not s.caption} <= ITEM_DIMENSIONS
    assert default_source("vocabulary.yaml").is_file()


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _packaged(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_source(name).read_text(encoding="utf-8"))
    return data


def test_malformed_vocabulary_names_file_and_key(tmp_path: Path) -> None:
    data = _packaged("vocabulary.yaml")
    data["categories"]["beauty"]["nouns"] = "serum"  # a string, not a list
    path = _write(tmp_path, "vocabulary.yaml", data)
    with pytest.raises(DataFileError) as err:
        load_vocabulary(path)
    msg = str(err.value)
    assert str(path) in msg and "'categories.beauty.nouns'" in msg and "non-empty list of strings" in msg
    assert err.value.key == "categories.beauty.nouns" and isinstance(err.value, DataSourceError)

    del data["categories"]["beauty"]["nouns"]
    with pytest.raises(DataFileError, match=r"'categories\.beauty\.nouns'.*required keys"):
        load_vocabulary(_write(tmp_path, "v2.yaml", data))
    data["categories"]["beauty"]["nouns"] = ["serum"]
    data["categories"]["sneakers"]["dimensions"]["brand"][2] = 7
    with pytest.raises(DataFileError, match=r"'categories\.sneakers\.dimensions\.brand\[2\]'.*got 7"):
        load_vocabulary(_write(tmp_path, "v3.yaml", data))
    data["categories"]["sneakers"]["dimensions"]["brand"][2] = "NB"
    data["categories"]["sneakers"]["colours"] = ["red"]
    with pytest.raises(DataFileError, match=r"'categories\.sneakers\.colours'.*only the keys"):
        load_vocabulary(_write(tmp_path, "v4.yaml", data))


def test_malformed_phrases_and_unreadable_files(tmp_path: Path) -> None:
    data = _packaged("phrases.yaml")
    data["dimension_phrases"]["brand"]["title"] = []
    with pytest.raises(DataFileError, match=r"'dimension_phrases\.brand\.title'.*non-empty list"):
        load_phrases(_write(tmp_path, "phrases.yaml", data))
    bad = tmp_path / "broken.yaml"
    bad.write_text("categories: [unclosed\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"broken\.yaml: top level: expected valid YAML"):
        load_vocabulary(bad)
    with pytest.raises(DataFileError, match=r"missing\.yaml: top level: expected a readable UTF-8 file"):
        load_phrases(tmp_path / "missing.yaml")
