"""Dataset adapters: real data from ../shared/data (skipped when absent) and hand-made fixtures."""

from __future__ import annotations

import csv
import functools
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from features.datasets import Dataset, generic, kuairec, load_source, mind, movielens
from features.errors import ConfigError, DataSourceError, SchemaError
from features.schemas import validate, validate_tables

LOAD_SECONDS: dict[str, float] = {}


@functools.cache
def _load_real(source: str, path: str) -> Dataset:
    """Load a real dataset once per test session (the loads take seconds on 2 cores)."""
    started = time.perf_counter()
    dataset = load_source(source, path)
    LOAD_SECONDS[source] = time.perf_counter() - started
    return dataset


def _check_canonical(dataset: Dataset) -> None:
    revalidated = validate_tables(dataset.tables)
    for name, df in dataset.tables.items():
        pd.testing.assert_frame_equal(revalidated[name], df, check_dtype=False)


# --------------------------------------------------------------------------- movielens


@pytest.mark.integration
def test_movielens_counts_and_speed(shared_data):
    dataset = _load_real("movielens", str(shared_data("movielens-latest-small")))
    assert {n: len(df) for n, df in dataset.tables.items()} == {
        "notes": 9742,
        "users": 610,
        "interactions": 100_836,
    }
    assert LOAD_SECONDS["movielens"] < 10
    _check_canonical(dataset)


@pytest.mark.integration
def test_movielens_mapping(shared_data):
    dataset = _load_real("movielens", str(shared_data("movielens-latest-small")))
    notes = dataset.tables["notes"].set_index("note_id")
    toy = notes.loc["m1"]
    assert toy["title"] == "Toy Story"
    assert toy["category"] == "Adventure"
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy["year"] == 1995
    assert "pixar" in toy["reference_tags"]
    assert notes["reference_tags"].map(lambda ts: all(t == t.strip().lower() and t for t in ts)).all()
    assert notes["reference_tags"].map(lambda ts: len(ts) == len(set(ts))).all()
    inter = dataset.tables["interactions"]
    assert ((inter["rating"] >= 4) == (inter["event"] == "like")).all()
    assert inter["dwell_seconds"].isna().all()
    # created_at is the first activity, so no rating precedes its movie or its user
    first = inter.groupby("note_id")["ts"].min()
    assert (notes.loc[first.index, "created_at"] <= first).all()


def _write_movielens(folder: Path) -> Path:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"Heat (1995)",Action|Crime\n'
        "2,Untitled,(no genres listed)\n"
        "3,Never Seen (2001) ,Drama\n"
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n7,1,4.5,1000\n7,2,2.0,900\n8,1,3.0,1100\n"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n9,1,  Heist ,800\n7,1,heist,1200\n7,1,Al Pacino,1300\n"
    )
    return folder


def test_movielens_small_fixture(tmp_path):
    dataset = movielens.load(str(_write_movielens(tmp_path / "ml")))
    notes = dataset.tables["notes"].set_index("note_id")
    assert notes.loc["m1", "reference_tags"] == ["heist", "al pacino"]
    assert notes.loc["m1", "created_at"] == pd.Timestamp(800, unit="s", tz="UTC")  # the tag came first
    assert notes.loc["m2", "category"] == "unknown"
    assert notes.loc["m3", "created_at"] == movielens.SNAPSHOT  # never rated nor tagged
    assert notes.loc["m3", "title"] == "Never Seen"
    assert notes.loc["m1", "body"] == "Heat (1995). Genres: Action, Crime."
    # users are the raters (user 9 only tagged); created_at = first rating or tag
    users = dataset.tables["users"].set_index("user_id")
    assert sorted(users.index) == ["7", "8"]
    assert users.loc["7", "created_at"] == pd.Timestamp(900, unit="s", tz="UTC")
    assert dataset.tables["interactions"]["event"].tolist() == ["like", "click", "click"]
    clicks_only = movielens.load(str(tmp_path / "ml"), like_threshold=None)
    assert set(clicks_only.tables["interactions"]["event"]) == {"click"}


def test_movielens_missing_file_and_bad_option(tmp_path):
    folder = _write_movielens(tmp_path / "ml")
    (folder / "tags.csv").unlink()
    with pytest.raises(DataSourceError, match=r"tags\.csv"):
        movielens.load(str(folder))
    with pytest.raises(ConfigError, match="like_threshold"):
        movielens.load(str(folder), like_treshold=3)
    with pytest.raises(DataSourceError, match="does not exist"):
        movielens.load(str(tmp_path / "nowhere"))


def test_movielens_missing_column(tmp_path):
    folder = _write_movielens(tmp_path / "ml")
    (folder / "ratings.csv").write_text("userId,movieId,score,timestamp\n7,1,4.5,1000\n")
    with pytest.raises(DataSourceError, match=r"ratings\.csv.*rating"):
        movielens.load(str(folder))


# --------------------------------------------------------------------------- kuairec


@pytest.mark.integration
def test_kuairec_counts_and_tags(shared_data):
    folder = shared_data("kuairec-captions")
    dataset = _load_real("kuairec", str(folder))
    assert set(dataset.tables) == {"notes"}
    notes = dataset.tables["notes"]
    # 7,476 rows = 7,477 "\n"-terminated lines minus the header = rows of item_categories.csv. A reader
    # that also splits on "\r" (Python's csv module) sees 7,480 rows: four captions hold a bare "\r".
    assert len(notes) == 7476
    assert len(notes) == len(pd.read_csv(folder / "item_categories.csv"))
    assert (notes["reference_tags"].str.len() > 0).sum() == 4234
    assert (
        notes["reference_tags"]
        .map(lambda ts: len(ts) == len(set(ts)) and all(t and t == t.strip() for t in ts))
        .all()
    )
    assert "unknown" in set(notes["category"]) and "UNKNOWN" not in set(notes["category"])
    assert notes["feat_ids"].map(len).min() >= 1
    _check_canonical(dataset)


def _published(folder: Path) -> pd.DataFrame:
    """The captions file as published, read independently of the adapter (indexed by video_id)."""
    return pd.read_csv(
        folder / kuairec.CAPTIONS, dtype=str, keep_default_na=False, lineterminator="\n"
    ).set_index("video_id")


def _ws(text: str) -> str:
    return "".join(text.split())


@pytest.mark.integration
def test_kuairec_keep_shows_the_note_as_published(shared_data):
    folder = shared_data("kuairec-captions")
    notes = _load_real("kuairec", str(folder)).tables["notes"].set_index("note_id")
    raw = _published(folder)
    caption = raw["caption"].str.replace("\r", "")
    cover = raw["manual_cover_text"].where(raw["manual_cover_text"] != "UNKNOWN", "")
    assert [_ws(b) for b in notes["body"]] == [_ws(c) for c in caption]
    assert [_ws(t) for t in notes["title"]] == [_ws(c) for c in cover]
    assert notes["body"].str.contains("#").sum() > 3000  # the creators' hashtags are in the text
    # a name that is also the note's own reference tag stays in the text
    v766 = notes.loc["v766"]
    assert v766["body"] == "关晓彤运动装也挡不住大长腿#关晓彤"
    assert v766["title"].startswith("关晓彤") and "关晓彤" in v766["reference_tags"]


@pytest.mark.integration
def test_kuairec_strip_removes_hashtag_tokens_only(shared_data):
    folder = shared_data("kuairec-captions")
    dataset = kuairec.load(str(folder), hashtags="strip")
    notes = dataset.tables["notes"].set_index("note_id")
    assert not notes["body"].str.contains("[#＃]").any()
    assert not notes["title"].str.contains("[#＃]").any()
    assert dataset.info["options"] == {"hashtags": "strip"}
    assert dataset.info["hashtag_tokens_removed"]["body"] > 5000
    raw = _published(folder)
    outside = re.compile(r"[#＃][^\s#＃]*")  # generous: a hashtag token never reaches past a space or "#"
    kept_words = 0
    for vid, row in raw.iterrows():
        body = notes.loc[f"v{vid}", "body"]
        running = outside.sub(" ", row["caption"])  # the caption with every hashtag token blanked
        caption = row["caption"]
        for tag in kuairec.parse_topic_tags(row["topic_tag"]):
            # every plain (running-text) occurrence of an own tag survives ...
            assert body.count(tag) >= running.count(tag), (vid, tag, body)
            kept_words += running.count(tag)
            # ... and every whole hashtag token of it is gone
            tokens = len(re.findall(rf"[#＃]{re.escape(tag)}(?![\w·])", caption))
            assert body.count(tag) <= caption.count(tag) - tokens, (vid, tag, body)
    assert kept_words > 100
    assert notes.loc["v766", "body"] == "关晓彤运动装也挡不住大长腿"


@pytest.mark.parametrize("hashtags", ["keep", "strip"])
def test_kuairec_never_deletes_words_of_running_text(tmp_path, hashtags):
    rows = [
        '9,郎朗说了什么让关晓彤笑,郎朗说了什么让关晓彤笑 #郎朗 #关晓彤 ,"[郎朗,关晓彤]",6,明星娱乐,1,a,2,b'
    ]
    notes = kuairec.load(str(_write_kuairec(tmp_path / "k", rows)), hashtags=hashtags).tables["notes"]
    body, title = notes.loc[0, "body"], notes.loc[0, "title"]
    assert title == "郎朗说了什么让关晓彤笑"
    assert body.startswith("郎朗说了什么让关晓彤笑")
    assert (
        body == {"keep": "郎朗说了什么让关晓彤笑 #郎朗 #关晓彤", "strip": "郎朗说了什么让关晓彤笑"}[hashtags]
    )


@pytest.mark.parametrize(
    ("caption", "tags", "expected", "n_removed"),
    [
        ("好吃 #美食 #探店 ", ["美食", "探店"], "好吃", 2),
        ("＃记录生活＃小官家＃推广", ["记录生活", "推广"], "小官家", 2),  # full-width, read as #tag#
        ("我为#新神魔大陆#拍摄了视频！", ["新神魔大陆"], "我为 拍摄了视频！", 1),  # Weibo-style #tag#
        ("#高清视频#智能推广", ["高清视频", "智能推广"], "", 2),  # closing "#" that opens the next tag
        ("#袁隆平生日快乐 #袁隆平 ", ["袁隆平"], "", 2),  # longer hashtag that starts with a tag
        ("#张公案\xa0的双男主", ["张公案"], "的双男主", 1),  # NBSP delimiter
        ("我爱美食 #美食", ["美食"], "我爱美食", 1),  # a plain occurrence of an own tag stays
        ("just #DK vibes dk", ["DK"], "just vibes dk", 1),  # ... in any case
        ("no tags # @someone #其他话题", [], "no tags @someone", 1),  # stray "#", foreign hashtag
        ("郎朗说了什么让关晓彤笑 #郎朗 #关晓彤", ["郎朗", "关晓彤"], "郎朗说了什么让关晓彤笑", 2),
    ],
)
def test_strip_hashtags(caption, tags, expected, n_removed):
    assert kuairec.strip_hashtags(caption, tags) == (expected, n_removed)


def test_tidy_only_touches_whitespace():
    assert kuairec.tidy(" 好吃\r  #美食\u3000\xa0 ok ") == "好吃 #美食 ok"


def test_parse_topic_tags():
    assert kuairec.parse_topic_tags("[a, b,,a , c]") == ["a", "b", "c"]
    assert kuairec.parse_topic_tags("[]") == []


def _write_kuairec(folder: Path, rows: list[str] | None = None) -> Path:
    folder.mkdir()
    header = ",".join(
        [
            "video_id",
            "manual_cover_text",
            "caption",
            "topic_tag",
            "first_level_category_id",
            "first_level_category_name",
            "second_level_category_id",
            "second_level_category_name",
            "third_level_category_id",
            "third_level_category_name",
        ]
    )
    rows = rows or [
        '1,UNKNOWN,好吃 #美食 #探店 ,"[美食,探店]",7,美食,1,探店,2,火锅',
        "2,封面 #封面话题,一行\r文字 ,[],-124,UNKNOWN,-124,UNKNOWN,-124,UNKNOWN",
    ]
    (folder / kuairec.CAPTIONS).write_bytes(("\n".join([header, *rows]) + "\n").encode())
    return folder


def test_kuairec_small_fixture(tmp_path):
    dataset = kuairec.load(str(_write_kuairec(tmp_path / "k")))
    notes = dataset.tables["notes"].set_index("note_id")
    assert list(notes.index) == ["v1", "v2"]  # the bare "\r" does not split a row
    assert notes.loc["v1", "body"] == "好吃 #美食 #探店"  # as published (hashtags="keep")
    assert notes.loc["v1", "reference_tags"] == ["美食", "探店"]
    assert notes.loc["v1", "third_level_category"] == "火锅"
    assert notes.loc["v2", "body"] == "一行文字"
    assert notes.loc["v2", "title"] == "封面 #封面话题"
    assert dataset.info["options"] == {"hashtags": "keep"}
    assert dataset.info["hashtag_tokens_removed"] == {"title": 0, "body": 0}
    assert dataset.info["notes_with_hashtags_in_text"] == 2
    stripped = kuairec.load(str(tmp_path / "k"), hashtags="strip").tables["notes"].set_index("note_id")
    assert stripped.loc["v1", "body"] == "好吃" and stripped.loc["v2", "title"] == "封面"
    assert notes.loc["v2", "category"] == "unknown"
    assert notes.loc["v1", "title"] == ""
    assert "feat_ids" not in notes.columns  # item_categories.csv is optional
    assert (notes["created_at"] == kuairec.CREATED_AT).all()


def test_kuairec_missing_file_and_bad_option(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match=kuairec.CAPTIONS):
        kuairec.load(str(tmp_path / "empty"))
    folder = _write_kuairec(tmp_path / "k")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) plain_tags; expected hashtags"):
        kuairec.load(str(folder), plain_tags="keep")  # the option of earlier versions is gone
    with pytest.raises(ConfigError, match="hashtags='drop'; expected one of keep, strip"):
        kuairec.load(str(folder), hashtags="drop")
    with pytest.raises(ConfigError, match="expected hashtags"):
        load_source("kuairec", str(folder), strip=True)


# --------------------------------------------------------------------------- mind


def _raw_mind_counts(folder: Path, known: set[str]) -> tuple[int, int, int, int]:
    """Impressions and clicks in behaviors.tsv: all, and on articles present in news.tsv."""
    shown = clicks = shown_known = clicks_known = 0
    with (folder / "behaviors.tsv").open(newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            for item in row[4].split():
                news_id, label = item.rsplit("-", 1)
                shown += 1
                clicks += label == "1"
                shown_known += news_id in known
                clicks_known += news_id in known and label == "1"
    return shown, clicks, shown_known, clicks_known


@pytest.mark.integration
def test_mind_counts_match_raw_file(shared_data):
    folder = shared_data("mind-small-subset")
    dataset = _load_real("mind", str(folder))
    tables = dataset.tables
    assert len(tables["notes"]) == 2000
    assert len(tables["users"]) == 4637
    shown, clicks, shown_known, clicks_known = _raw_mind_counts(folder, set(tables["notes"]["note_id"]))
    events = tables["interactions"]["event"].value_counts()
    assert events["impression"] == shown_known
    assert events["click"] == clicks_known
    assert (dataset.info["raw_impressions"], dataset.info["raw_clicks"]) == (shown, clicks)
    assert dataset.info["dropped_interactions_unknown_note"] == shown + clicks - shown_known - clicks_known
    assert tables["interactions"]["note_id"].nunique() == 284  # the articles with text (PROVENANCE)
    _check_canonical(dataset)


@pytest.mark.integration
def test_mind_referential_integrity(shared_data):
    tables = _load_real("mind", str(shared_data("mind-small-subset"))).tables
    inter = tables["interactions"]
    assert inter["note_id"].isin(tables["notes"]["note_id"]).all()
    assert inter["user_id"].isin(tables["users"]["user_id"]).all()
    # every click has its impression: same log, user, article and time
    key = ["impression_id", "user_id", "note_id", "ts"]
    clicks = inter[inter["event"] == "click"][key]
    shown = inter[inter["event"] == "impression"][key]
    assert len(clicks.merge(shown, on=key)) == len(clicks)
    assert (inter["ts"] >= pd.Timestamp("2019-11-09", tz="UTC")).all()


def _write_mind(folder: Path) -> Path:
    folder.mkdir()
    (folder / "news.tsv").write_text(
        "N1\tsports\tsoccer\tGoal!\tA late goal.\thttp://x\t[]\t[]\n"
        "N2\tnews\tnewsus\tQuiet day\t\thttp://y\t[]\t[]\n"
    )
    (folder / "behaviors.tsv").write_text(
        "1\tU1\t11/11/2019 9:05:58 PM\tN9 N8\tN1-1 N2-0 N404-1\n2\tU2\t11/12/2019 12:00:01 AM\t\tN2-0\n"
    )
    return folder


def test_mind_small_fixture(tmp_path):
    dataset = mind.load(str(_write_mind(tmp_path / "mind")))
    inter = dataset.tables["interactions"]
    assert sorted(zip(inter["note_id"], inter["event"], strict=True)) == [
        ("N1", "click"),
        ("N1", "impression"),
        ("N2", "impression"),
        ("N2", "impression"),
    ]
    assert dataset.info["dropped_interactions_unknown_note"] == 2  # N404: impression + click
    assert dataset.info["raw_impressions"] == 4 and dataset.info["raw_clicks"] == 2
    assert inter["ts"].min() == pd.Timestamp("2019-11-11T21:05:58Z")
    notes = dataset.tables["notes"].set_index("note_id")
    assert notes.loc["N2", "body"] == ""
    assert notes.loc["N1", "subcategory"] == "soccer"
    assert notes.loc["N1", "created_at"] == pd.Timestamp("2019-11-11T21:05:58Z")
    users = dataset.tables["users"].set_index("user_id")
    assert users.loc["U2", "created_at"] == pd.Timestamp("2019-11-12T00:00:01Z")


def test_mind_bad_inputs(tmp_path):
    folder = _write_mind(tmp_path / "mind")
    (folder / "behaviors.tsv").write_text("1\tU1\t2019-11-11 09:05\t\tN1-1\n")
    with pytest.raises(DataSourceError, match="unparsable times"):
        mind.load(str(folder))
    (folder / "behaviors.tsv").write_text("1\tU1\t11/11/2019 9:05:58 AM\t\tN1:1\n")
    with pytest.raises(DataSourceError, match="malformed impression"):
        mind.load(str(folder))
    (folder / "behaviors.tsv").unlink()
    with pytest.raises(DataSourceError, match=r"behaviors\.tsv"):
        mind.load(str(folder))


# --------------------------------------------------------------------------- generic (parquet/csv)


def _canonical_tables() -> dict[str, pd.DataFrame]:
    ts = pd.Timestamp("2024-05-01T12:00:00Z")
    notes = pd.DataFrame(
        {
            "note_id": ["n001", "n002"],
            "author_id": ["a1", "a2"],
            "category": ["outdoor", "food"],
            "title": ["Tent", ""],
            "body": ['A light tent, "ultralight" | 2 people', "Noodles"],
            "image_captions": [["a tent on a hill", "inside, at night"], []],
            "created_at": [ts, ts + pd.Timedelta(hours=1)],
            "reference_tags": [["camping", "ultralight"], None],
        }
    )
    users = pd.DataFrame({"user_id": ["u1", "u2"], "created_at": [ts, ts]})
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "note_id": ["n001", "n001", "n002"],
            "ts": [ts, ts + pd.Timedelta(seconds=3), ts],
            "event": ["impression", "click", "impression"],
            "dwell_seconds": [None, 12.5, None],
        }
    )
    tags = pd.DataFrame(
        {
            "note_id": ["n001"],
            "tagger": ["teacher"],
            "tagger_version": ["v1"],
            "tags": [[{"text": "ultralight tent", "dimension": "gear", "confidence": 0.9}]],
            "generated_at": [ts],
        }
    )
    assignments = pd.DataFrame(
        {"user_id": ["u1"], "experiment": ["tags"], "variant": ["treatment"], "assigned_at": [ts]}
    )
    return validate_tables(
        {
            "notes": notes,
            "users": users,
            "interactions": interactions,
            "tags": tags,
            "assignments": assignments,
        }
    )


def _to_csv(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in ("image_captions", "reference_tags", "tags"):
        if col in out.columns:
            out[col] = out[col].map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
    out.to_csv(path, index=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_round_trip(tmp_path, fmt):
    expected = _canonical_tables()
    for name, df in expected.items():
        if fmt == "csv":
            _to_csv(df, tmp_path / f"{name}.csv")
        else:
            df.to_parquet(tmp_path / f"{name}.parquet")
    dataset = load_source("parquet", str(tmp_path))
    assert set(dataset.tables) == set(expected)
    for name, df in expected.items():
        pd.testing.assert_frame_equal(dataset.tables[name], df, check_dtype=False, obj=name)
    assert dataset.info["counts"]["interactions"] == 3


def test_generic_csv_list_forms(tmp_path):
    (tmp_path / "notes.csv").write_text(
        "note_id,author_id,category,title,body,image_captions,created_at,reference_tags\n"
        '1,a,c,t,,"[""x"",""y""]",2024-01-01T00:00:00Z,a| b |\n'
        "2,a,c,t,b,,1704067200,\"['p', 'q']\"\n"
        "3,a,c,t,b,one|two,2024-01-01,\n"
    )
    notes = generic.load(str(tmp_path)).tables["notes"]
    assert notes["image_captions"].tolist() == [["x", "y"], [], ["one", "two"]]
    assert notes["reference_tags"].tolist() == [["a", "b"], ["p", "q"], None]
    assert notes["note_id"].tolist() == ["1", "2", "3"]
    assert notes["body"].tolist() == ["", "b", "b"]
    assert (notes["created_at"] == pd.Timestamp("2024-01-01", tz="UTC")).all()


def test_generic_missing_notes(tmp_path):
    _to_csv(_canonical_tables()["users"], tmp_path / "users.csv")
    with pytest.raises(DataSourceError, match=r"notes\.parquet or notes\.csv"):
        generic.load(str(tmp_path))


def test_generic_both_formats_is_ambiguous(tmp_path):
    notes = _canonical_tables()["notes"]
    _to_csv(notes, tmp_path / "notes.csv")
    notes.to_parquet(tmp_path / "notes.parquet")
    with pytest.raises(DataSourceError, match="expected only one"):
        generic.load(str(tmp_path))


def test_generic_bad_column_raises_schema_error(tmp_path):
    tables = _canonical_tables()
    _to_csv(tables["notes"], tmp_path / "notes.csv")
    bad = tables["interactions"].assign(event=["impression", "view", "click"])
    _to_csv(bad, tmp_path / "interactions.csv")
    with pytest.raises(SchemaError, match=r"interactions\.event") as err:
        generic.load(str(tmp_path))
    assert err.value.column == "event" and err.value.rows == [1]
    _to_csv(tables["notes"].drop(columns="category"), tmp_path / "notes.csv")
    with pytest.raises(SchemaError, match="category") as err:
        generic.load(str(tmp_path))
    assert err.value.table == "notes"


def test_generic_bad_list_cell(tmp_path):
    (tmp_path / "notes.csv").write_text(
        "note_id,author_id,category,title,body,image_captions,created_at\n"
        "1,a,c,t,b,[],2024-01-01\n"
        '2,a,c,t,b,"[""unclosed",2024-01-01\n'
    )
    with pytest.raises(SchemaError, match=r"notes\.image_captions") as err:
        generic.load(str(tmp_path))
    assert err.value.rows == [1]


def test_generic_references_checked(tmp_path):
    tables = _canonical_tables()
    tables["notes"].to_parquet(tmp_path / "notes.parquet")
    tables["interactions"].assign(note_id=["n001", "n001", "n999"]).to_parquet(
        tmp_path / "interactions.parquet"
    )
    with pytest.raises(SchemaError, match="n999"):
        generic.load(str(tmp_path))


def test_load_source_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs --path"):
        load_source("kuairec")
    with pytest.raises(ConfigError, match="no options"):
        load_source("parquet", str(tmp_path), strict=True)
    validate("notes", _canonical_tables()["notes"])  # the fixture itself is canonical


def test_mind_extra_field_is_an_error(tmp_path):
    folder = _write_mind(tmp_path / "mind")
    (folder / "news.tsv").write_text("N1\tsports\tsoccer\tGoal!\tA late goal.\thttp://x\t[]\t[]\tEXTRA\n")
    with pytest.raises(DataSourceError, match=r"news\.tsv"):
        mind.load(str(folder))
