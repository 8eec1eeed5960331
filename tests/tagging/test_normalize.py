"""Tag normalization and the tag vocabulary."""

from __future__ import annotations

import pytest

from features.errors import ConfigError
from tagging.handbook_model import Dimension, DimensionValue, Handbook, HandbookSection
from tagging.normalize import TagVocabulary, canonical, near_duplicate, normalize_tags
from tagging.types import Evidence, Tag

HB = Handbook(
    boilerplate=("fyp", "viral"),
    categories={
        "sneakers": HandbookSection(
            dimensions=(
                Dimension(
                    name="colour",
                    values=(
                        DimensionValue(value="off-white", synonyms=("cream white", "ivory")),
                        DimensionValue(value="triple black"),
                        DimensionValue(value="black and white"),
                    ),
                ),
            )
        )
    },
)


def test_canonical_form() -> None:
    assert canonical("  #Cream-White!! ") == "cream white"
    assert canonical("ＦＹＰ") == "fyp"
    assert canonical("感谢 快手") == "感谢快手"


def test_synonyms_boilerplate_and_near_duplicates() -> None:
    tags = [
        Tag("#Cream White", "other", 0.6, (Evidence("title", "cream white"),)),
        Tag("ivory", "colour", 0.9, (Evidence("image", "ivory"),)),
        Tag("FYP", "other", 1.0),
        Tag("chunky", "shape", 0.5),
        Tag("chunky dad shoe", "shape", 0.7),
        Tag("creamwhite", "other", 0.4),
    ]
    out = normalize_tags(tags, handbook=HB, category="sneakers")
    by_text = {t.text: t for t in out}
    assert set(by_text) == {"off white", "chunky dad shoe"}
    merged = by_text["off white"]
    assert merged.dimension == "colour" and merged.confidence == 0.9
    assert {e.source for e in merged.evidence} == {"title", "image"}


def test_distinct_handbook_values_are_not_merged() -> None:
    out = normalize_tags(
        [Tag("triple black", "colour"), Tag("black and white", "colour")], handbook=HB, category="sneakers"
    )
    assert len(out) == 2


def test_cap_per_dimension_keeps_most_confident() -> None:
    tags = [Tag(f"value {chr(97 + i)}{i}", "d", i / 10) for i in range(6)]
    tags = [Tag(t, "d", c) for t, c in [("alpha", 0.1), ("bravo", 0.9), ("charlie", 0.5), ("delta", 0.7)]]
    out = normalize_tags(tags, cap_per_dimension=2)
    assert [t.text for t in out] == ["bravo", "delta"]
    with pytest.raises(ConfigError, match="cap_per_dimension"):
        normalize_tags(tags, cap_per_dimension=0)


def test_near_duplicate() -> None:
    assert near_duplicate("sneakers", "white sneakers")
    assert near_duplicate("cream white", "cream whit")
    assert not near_duplicate("nike", "adidas")


def test_vocabulary_ids_stable_across_extension(tmp_path) -> None:
    v1 = TagVocabulary().extend(["Cream-White", "chunky", "cream white"])
    assert v1.id("cream white") == 1 and v1.id("chunky") == 2 and v1.id("unknown") == 0
    path = v1.save(tmp_path / "vocab.json")
    v2 = TagVocabulary.load(path).extend(["nike", "chunky"])
    assert v2.id("cream white") == 1 and v2.id("chunky") == 2 and v2.id("nike") == 3
    assert v2.version == v1.version + 1 and len(v2) == 3 and v2.size == 4
    assert v2.extend(["nike"]).version == v2.version
    (tmp_path / "bad.json").write_text('{"version": 1, "tokens": ["x"]}')
    with pytest.raises(ConfigError):
        TagVocabulary.load(tmp_path / "bad.json")


def test_drop_redundant_keeps_the_first_of_near_duplicates_across_dimensions():
    from tagging.normalize import drop_redundant

    tags = [
        Tag("beef noodles", "dish", 0.9),
        Tag("beef", "ingredient", 0.8),  # contained in a kept tag, other dimension: dropped
        Tag("牛肉面", "菜品", 0.7),
        Tag("牛肉", "食材", 0.6),  # CJK substring: dropped
        Tag("spicy", "taste", 0.5),
    ]
    assert [t.text for t in drop_redundant(tags)] == ["beef noodles", "牛肉面", "spicy"]
    assert drop_redundant([]) == ()
