"""The scorer student: candidates, neighbour memory, training (determinism, resume, no leakage),
the tagger (never boilerplate, input order, calibrated confidences, ungrounded ablation), the pipeline."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _scorer_fixtures import (
    BOILERPLATE,
    SMALL,
    handbook,
    make_notes,
    small_config,
    tag_f1,
    teacher_for,
)

from features.errors import ConfigError, NotFoundError
from tagging.normalize import canonical
from tagging.student.candidates import CandidateExtractor, hashtags, note_text
from tagging.types import NoteInput, Tag
from tests.tagging._runs import tiny_synthetic_run

# --------------------------------------------------------------------------- candidates


def _found(ex: CandidateExtractor, note: NoteInput) -> dict[str, tuple[str, frozenset[str]]]:
    return {c.text: (c.dimension, c.sources) for c in ex.extract(note)}


def test_hashtags_in_every_spelling() -> None:
    text = "Love these #Retro kicks, #复古# vibes, ＃抹茶 too; #retro again #Cream_White"
    assert hashtags(text) == ["retro", "复古", "抹茶", "cream white"]
    assert hashtags("no tags here, just a # sign") == []


def test_closing_hash_does_not_open_a_hashtag() -> None:
    assert hashtags("#复古#今天穿了新鞋") == ["复古"]


def test_hashtag_candidates_map_to_handbook_values() -> None:
    ex = CandidateExtractor(handbook(), {})
    got = _found(ex, NoteInput("n", "shoes", "new pair", "so good #OffWhite #kicks ＃复古"))
    dim, sources = got["cream white"]  # a synonym in its hashtag spelling
    assert dim == "colour" and {"hashtag", "handbook"} <= sources
    assert got["kicks"] == ("other", frozenset({"hashtag"}))
    assert "复古" in got  # a value of another category is still a hashtag candidate
    assert "offwhite" not in got


def test_handbook_synonym_in_text_proposes_the_value_in_its_dimension() -> None:
    ex = CandidateExtractor(handbook(), {})
    got = _found(ex, NoteInput("n", "shoes", "My new off-white sneakers", "Love the retro look."))
    assert got["cream white"] == ("colour", frozenset({"title", "handbook"}))
    assert got["retro"] == ("style", frozenset({"body", "handbook"}))
    assert "off white" not in got
    # another category's section does not apply
    assert "cream white" not in _found(ex, NoteInput("m", "咖啡", "off white cup", ""))
    got = _found(ex, NoteInput("c", "咖啡", "一杯Latte", ""))
    assert got["拿铁"] == ("口味", frozenset({"title", "handbook"}))


def test_known_tag_found_mid_sentence_in_chinese() -> None:
    ex = CandidateExtractor(None, {"手冲": "做法", "冲": "x"})
    cands = {c.text: c for c in ex.extract(NoteInput("n", "咖啡", "今天在店里喝了一杯手冲觉得不错", ""))}
    assert cands["手冲"].dimension == "做法" and cands["手冲"].sources == {"title", "known"}
    assert 0.0 < cands["手冲"].first_pos < 1.0 and cands["手冲"].count == 1
    assert "冲" in cands  # every position between CJK characters is an edge


def test_latin_matches_only_at_word_edges() -> None:
    ex = CandidateExtractor(None, {"art": "topic", "red": "colour"})
    assert _found(ex, NoteInput("n", "x", "party in a smart artist studio", "bored, shredded")) == {}
    cands = {c.text: c for c in ex.extract(NoteInput("m", "x", "Art class", "modern art! red-ish"))}
    assert cands["art"].count == 2 and cands["art"].sources == {"title", "body", "known"}
    assert cands["red"].dimension == "colour"  # "red-ish" canonicalizes to "red ish"


def test_boilerplate_is_never_a_candidate_and_leaves_the_text() -> None:
    hb = handbook()  # boilerplate: 热门, fyp
    ex = CandidateExtractor(hb, {BOILERPLATE: "other", "fyp": "other", "kicks": "topic"})
    note = NoteInput(
        "n", "shoes", "Retro kicks #FYP", "热门 again #热门 #kicks ＃热门 #周末", ("a #fyp caption",)
    )
    texts = [c.text for c in ex.extract(note)]
    assert BOILERPLATE not in texts and "fyp" not in texts
    assert {"retro", "kicks", "周末"} <= set(texts)
    title, body = note_text(note, ex.boilerplate)
    assert "#FYP" not in title and "Retro kicks" in title
    assert "#热门" not in body and "＃热门" not in body and "fyp" not in body
    assert "#kicks" in body and "#周末" in body and "热门 again" in body  # plain words stay
    assert body.endswith(" caption") and body.split()[-2:] == ["a", "caption"]  # captions are body text
    # without boilerplate the text is unchanged
    assert note_text(note) == (note.title, f"{note.body} a #fyp caption")


# --------------------------------------------------------------------------- neighbour memory


def test_a_note_never_votes_for_itself() -> None:
    from tagging.student.scorer_data import Priors, ScorerFeaturizer
    from tagging.student.scorer_memory import NeighbourMemory, to_csr

    notes = [
        NoteInput("a", "shoes", "red retro sneakers with zebra stripes", ""),
        NoteInput("b", "shoes", "red retro sneakers", ""),
        NoteInput("c", "咖啡", "一杯拿铁", ""),
    ]
    tags = [("retro", "zebra"), ("retro",), ("拿铁",)]
    feat = ScorerFeaturizer(CandidateExtractor(None, {}), [], Priors(), buckets=4096)
    grams = [feat.note_ngrams(n) for n in notes]
    mem = NeighbourMemory(to_csr(grams, [feat.weights(g) for g in grams], 4096), ["a", "b", "c"], tags, k=2)
    query = mem.matrix[0:1]
    own = mem.votes(query)[0]
    assert own["zebra"][2] == pytest.approx(1.0, abs=1e-5)  # without exclusion it is its own neighbour
    excluded = mem.votes(query, exclude=[0])[0]
    assert "zebra" not in excluded and "拿铁" not in excluded
    assert excluded["retro"][3] == 1 and 0 < excluded["retro"][2] < 1
    assert mem.votes(query, exclude=[-1])[0] == own


def test_memory_save_load_round_trip(tmp_path) -> None:
    from scipy import sparse

    from tagging.student.scorer_memory import NeighbourMemory

    m = sparse.csr_matrix(np.asarray([[1.0, 0, 0], [0.6, 0.8, 0]], dtype=np.float32))
    mem = NeighbourMemory(m, ["x", "y"], [("热门",), ("a", "b")], k=5)
    mem.save(tmp_path)
    back = NeighbourMemory.load(tmp_path)
    assert back.note_ids == ["x", "y"] and back.tags == [("热门",), ("a", "b")] and back.k == 5
    assert (back.matrix != m).nnz == 0
    assert back.votes(m[1:2], exclude=[1]) == mem.votes(m[1:2], exclude=[1])


def test_hash_ngrams_are_deterministic() -> None:
    import zlib

    from tagging.student.scorer_data import hash_ngrams

    ids = hash_ngrams("复古ab", "x:", 2, 1000)
    assert len(ids) == 4 + 3
    assert ids[0] == zlib.crc32("x:复".encode()) % 1000  # CRC-32, not Python's salted hash()
    assert hash_ngrams("ab", "", 3, 97) == hash_ngrams("ab", "", 3, 97) != hash_ngrams("ab", "y", 3, 97)


# --------------------------------------------------------------------------- config and threads


def test_config_errors_name_the_option() -> None:
    from tagging.student.config import StudentConfig

    cfg = StudentConfig.from_mapping(SMALL)
    assert cfg.arch == "scorer" and cfg.scorer.dim == 16 and cfg.n_epochs == 3
    assert StudentConfig().n_epochs == 40 and StudentConfig(arch="seq2seq").n_epochs == 12
    with pytest.raises(ConfigError, match=r"scorer\.bogus.*got 1"):
        StudentConfig.from_mapping({"scorer": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"batch_size.*got 0"):
        StudentConfig.from_mapping({**SMALL, "batch_size": 0})
    with pytest.raises(ConfigError, match=r"scorer\.buckets"):
        StudentConfig.from_mapping({"scorer": {"buckets": 8}})


def test_set_threads_default_is_half_the_cores(monkeypatch) -> None:
    import torch

    from tagging.student.scorer_apply import set_threads

    before = torch.get_num_threads()
    try:
        expected = max(1, (os.cpu_count() or 2) // 2)
        assert set_threads(0) == expected == torch.get_num_threads()
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        assert set_threads(0) == 4 == torch.get_num_threads()
        monkeypatch.setattr(os, "cpu_count", lambda: 1)
        assert set_threads(0) == 1 == torch.get_num_threads()
        assert set_threads(3) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- training and tagging


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny scorer trained on 200 synthetic notes whose fake teacher also tags boilerplate."""
    from tagging.student.scorer_train import train_scorer

    base = tmp_path_factory.mktemp("scorer")
    notes, teacher = make_notes(200)
    hb = handbook()
    result = train_scorer(
        notes, teacher, work_dir=base / "work", out_dir=base / "model", config=small_config(), handbook=hb
    )
    return {"base": base, "notes": notes, "teacher": teacher, "handbook": hb, "result": result}


def test_train_exports_a_scorer_folder(trained) -> None:
    res, model = trained["result"], trained["base"] / "model"
    names = {p.name for p in model.iterdir()}
    assert {"model.safetensors", "student.json", "memory.npz", "memory.json", "README.md"} <= names
    assert not list(model.parent.glob(".model.*"))  # the atomic export leaves nothing behind
    meta = json.loads((model / "student.json").read_text())
    assert meta["arch"] == "scorer" and meta["scorer"]["dim"] == 16
    assert res.arch == "scorer" and res.resumed_from_step == 0 and res.epochs_done == 3
    assert res.n_train + res.n_val + res.n_test == 200 and res.n_val > 0
    assert res.steps == 3 * -(-res.n_train // 16) and res.stopped == "epochs"
    assert (trained["base"] / "work" / "scorer_ckpt.pt").exists()
    split = pd.read_parquet(trained["base"] / "work" / "split.parquet")
    assert len(split) == 200 and set(split["split"]) == {"train", "val", "test"}


def test_student_tags_are_never_boilerplate(trained) -> None:
    """The must-show: the teacher tagged 热门 on two notes in three; the student never does."""
    from tagging.student.scorer_apply import ScorerTagger

    hb = trained["handbook"]
    boiler = {canonical(b) for b in hb.boilerplate}
    notes, _ = make_notes(60, seed=3, prefix="b")
    notes += [
        NoteInput("x1", "shoes", "#热门 #fyp", "#热门 热门 fyp"),
        NoteInput("x2", "咖啡", "热门拿铁 ＃热门＃", "#热门# #FYP"),
    ]
    assert all(BOILERPLATE in n.title + n.body for n in notes[:2])
    for grounded in (True, False):
        tagger = ScorerTagger.load(trained["base"] / "model", handbook=hb, device="cpu", grounded=grounded)
        for r in tagger.tag(notes):
            assert not {canonical(t.text) for t in r.tags} & boiler, (r.note_id, r.tags)


def test_boilerplate_is_not_learned_nor_counted_in_validation(trained) -> None:
    from tagging.student.scorer_apply import ScorerTagger

    model = trained["base"] / "model"
    meta = json.loads((model / "student.json").read_text())
    split = pd.read_parquet(trained["base"] / "work" / "split.parquet")
    val_ids = set(split.loc[split["split"] == "val", "note_id"])
    val = [n for n in trained["notes"] if n.note_id in val_ids]
    gold = teacher_for(val, trained["teacher"], boilerplate=False)
    assert BOILERPLATE not in meta["known_tags"]
    for grounded, key in ((True, "f1_vs_teacher"), (False, "ungrounded_f1_vs_teacher")):
        tagger = ScorerTagger.load(model, handbook=trained["handbook"], device="cpu", grounded=grounded)
        measured = tag_f1({r.note_id: {t.text for t in r.tags} for r in tagger.tag(val)}, gold)
        assert meta["validation"][key] == pytest.approx(measured, abs=0.05), key


def test_end_to_end_f1_order_and_confidence(trained) -> None:
    from tagging.student import load_student, student_arch
    from tagging.student.scorer_apply import ScorerTagger

    model, hb = trained["base"] / "model", trained["handbook"]
    assert student_arch(model) == "scorer"
    tagger = load_student(model, handbook=hb, device="cpu", num_beams=4, batch_size=7)
    assert isinstance(tagger, ScorerTagger)
    held, teacher = make_notes(80, seed=1, prefix="h")  # notes the student never saw
    random.Random(0).shuffle(held)
    results = tagger.tag(held)
    assert [r.note_id for r in results] == [n.note_id for n in held]
    assert all(0.0 <= t.confidence <= 1.0 for r in results for t in r.tags)
    assert all(r.status == "ok" for r in results) and tagger.last_notes_per_s > 0
    pred = {r.note_id: {t.text for t in r.tags} for r in results}
    f1 = tag_f1(pred, teacher_for(held, teacher, boilerplate=False))
    assert f1 > 0.8, f1
    by_text = {t.text: t.dimension for r in results for t in r.tags}
    assert by_text.get("cream white") == "colour" and by_text.get("拿铁") == "口味"
    assert tagger.tag([]) == []


def test_seq2seq_folders_dispatch_to_the_seq2seq_tagger(tmp_path, monkeypatch) -> None:
    from tagging.student import load_student, student_arch
    from tagging.student.apply import StudentTagger

    calls: list[dict] = []

    def fake_load(cls, path, **kw):
        calls.append(kw)
        return "s2s"

    monkeypatch.setattr(StudentTagger, "load", classmethod(fake_load))
    for name, meta in (("old", {"copy_head": False}), ("new", {"arch": "seq2seq"})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "student.json").write_text(json.dumps(meta))
        assert student_arch(folder) == "seq2seq"
        assert load_student(folder, num_beams=2, threads=3) == "s2s"
    assert calls == [{"num_beams": 2}, {"num_beams": 2}]  # threads is the scorer's option
    with pytest.raises(NotFoundError, match=r"missing student\.json"):
        student_arch(tmp_path / "nowhere")


def test_ungrounded_ablation_never_reads_the_notes_words(trained) -> None:
    from tagging.student.scorer_apply import ScorerTagger

    model, hb = trained["base"] / "model", trained["handbook"]
    held, teacher = make_notes(60, seed=2, prefix="u")
    own = {n.note_id: teacher[n.note_id][3].text for n in held}  # each note's unique hashtag
    assert all(f"#{t}" in n.body for n, t in zip(held, own.values(), strict=True))
    grounded = ScorerTagger.load(model, handbook=hb, device="cpu").tag(held)
    assert sum(own[r.note_id] in {t.text for t in r.tags} for r in grounded) > len(held) // 2
    ablation = ScorerTagger.load(model, handbook=hb, device="cpu", grounded=False)
    results = ablation.tag(held)
    rows = ablation.featurizer.rows(held, cands=[[] for _ in held])
    allowed_known = set(ablation.known)
    for r, row in zip(results, rows, strict=True):
        texts = {t.text for t in r.tags}
        assert own[r.note_id] not in texts
        assert texts <= allowed_known | set(row.cand_texts), (r.note_id, texts)
        assert not set(row.cand_texts) - _voted(ablation, row.note_id, held)


def _voted(tagger, note_id: str, notes: list[NoteInput]) -> set[str]:
    """Every tag a note's nearest training notes vote for (the ungrounded tagger's only candidates)."""
    from tagging.student.scorer_memory import to_csr

    feat = tagger.featurizer
    note = next(n for n in notes if n.note_id == note_id)
    g = feat.note_ngrams(note)
    return set(feat.memory.votes(to_csr([g], [feat.weights(g)], feat.buckets))[0])


@pytest.fixture(scope="module")
def well_trained(tmp_path_factory) -> Path:
    """A scorer trained long enough (higher learning rates, dim 32) for its known-tag head to be good."""
    from tagging.student.scorer_train import train_scorer

    base = tmp_path_factory.mktemp("scorer_long")
    notes, teacher = make_notes(200)
    scorer = {"buckets": 4096, "dim": 32, "hidden": 16, "lr": 1e-2, "sparse_lr": 3e-2}
    cfg = small_config(epochs=20, scorer=scorer)
    train_scorer(
        notes, teacher, work_dir=base / "work", out_dir=base / "model", config=cfg, handbook=handbook()
    )
    return base / "model"


def _known_head_alone(tagger, notes: list[NoteInput]) -> dict[str, set[str]]:
    """The tags the known-tag classifier alone gives (probability >= 0.5), boilerplate left out."""
    from tagging.student.scorer_apply import predict_probs

    rows = tagger.featurizer.rows(notes, cands=[[] for _ in notes])
    logits = predict_probs(tagger.model, rows, tagger.featurizer.known_index)
    t = tagger.selection.known_temperature
    return {
        n.note_id: {tagger.known[k] for k in np.flatnonzero(tl / t >= 0.0)} - {BOILERPLATE}  # p >= 0.5
        for n, (tl, _) in zip(notes, logits, strict=True)
    }


def test_the_known_tag_head_learns_abstractive_tags(well_trained) -> None:
    from tagging.student.scorer_apply import ScorerTagger

    held, teacher = make_notes(80, seed=1, prefix="h")
    tagger = ScorerTagger.load(well_trained, handbook=handbook(), device="cpu", grounded=False)
    f1 = tag_f1(_known_head_alone(tagger, held), teacher_for(held, teacher, boilerplate=False))
    assert f1 > 0.7, f1


def test_the_ungrounded_ablation_keeps_what_the_known_tag_head_learned(well_trained) -> None:
    from tagging.student.scorer_apply import ScorerTagger

    held, teacher = make_notes(80, seed=1, prefix="h")
    gold = teacher_for(held, teacher, boilerplate=False)
    tagger = ScorerTagger.load(well_trained, handbook=handbook(), device="cpu", grounded=False)
    alone = tag_f1(_known_head_alone(tagger, held), gold)
    ablation = tag_f1({r.note_id: {t.text for t in r.tags} for r in tagger.tag(held)}, gold)
    assert ablation >= alone - 0.1, (ablation, alone)


def test_no_leakage_out_of_fold_candidates(trained, tmp_path) -> None:
    """A tag only one training note used is no "known" candidate of that note, and no vote for it."""
    from tagging.student.config import StudentConfig
    from tagging.student.data import split_of
    from tagging.student.scorer_prepare import prepare_data

    notes, teacher = list(trained["notes"]), dict(trained["teacher"])
    cfg: StudentConfig = small_config()
    nid = next(
        f"z{i}"
        for i in range(100)
        if split_of(f"z{i}", test_share=cfg.test_share, val_share=cfg.val_share) == "train"
    )
    notes.append(NoteInput(nid, "shoes", "My new red retro zebrastripe sneakers", "so comfy #kicks"))
    teacher[nid] = [Tag("red", "colour"), Tag("retro", "style"), Tag("zebrastripe", "pattern")]
    data = prepare_data(notes, teacher, cfg, trained["handbook"], tmp_path)
    row = next(r for r in data.train if r.note_id == nid)
    assert {"red", "retro", "kicks"} <= set(row.cand_texts)
    assert "zebrastripe" not in row.cand_texts
    # the full extractor (used for unseen notes) does know it: the exclusion above is out-of-fold, not luck
    full = {c.text: c.sources for c in data.featurizer.extractor.extract(notes[-1])}
    assert "known" in full["zebrastripe"]
    assert data.featurizer.priors.tag_freq["zebrastripe"] == 1


def test_same_seed_same_bytes(trained, tmp_path) -> None:
    from tagging.student.scorer_train import train_scorer

    a = trained["base"] / "model"
    kw = {"handbook": trained["handbook"]}
    train_scorer(trained["notes"], trained["teacher"], work_dir=tmp_path / "wb", out_dir=tmp_path / "b",
                 config=small_config(), **kw)  # fmt: skip
    b = tmp_path / "b"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    sel = [json.loads((m / "student.json").read_text())["selection"] for m in (a, b)]
    assert sel[0] == sel[1]
    train_scorer(trained["notes"], trained["teacher"], work_dir=tmp_path / "wc", out_dir=tmp_path / "c",
                 config=small_config(seed=1), **kw)  # fmt: skip
    assert (a / "model.safetensors").read_bytes() != (tmp_path / "c" / "model.safetensors").read_bytes()


def test_resume_and_fresh_start(trained, tmp_path) -> None:
    from tagging.student.scorer_train import train_scorer

    first = trained["result"]
    work = tmp_path / "work"
    shutil.copytree(trained["base"] / "work", work)
    args = (trained["notes"], trained["teacher"])
    kw = {"work_dir": work, "out_dir": tmp_path / "m", "handbook": trained["handbook"]}
    again = train_scorer(*args, config=small_config(), **kw)
    assert again.resumed_from_step == first.steps > 0 and again.steps == first.steps
    assert again.epochs_done == first.epochs_done and again.history == first.history
    a = trained["base"] / "model" / "model.safetensors"
    assert a.read_bytes() == (tmp_path / "m" / "model.safetensors").read_bytes()
    other = train_scorer(*args, config=small_config(scorer={**SMALL["scorer"], "dim": 8}), **kw)
    assert other.resumed_from_step == 0 and other.epochs_done == 3 and other.steps == first.steps
    assert json.loads((tmp_path / "m" / "student.json").read_text())["scorer"]["dim"] == 8


def test_a_larger_budget_continues_a_finished_run(trained, tmp_path) -> None:
    from tagging.student.scorer_train import train_scorer

    first = trained["result"]
    work = tmp_path / "work"
    shutil.copytree(trained["base"] / "work", work)
    more = train_scorer(trained["notes"], trained["teacher"], work_dir=work, out_dir=tmp_path / "m",
                        config=small_config(epochs=4), handbook=trained["handbook"])  # fmt: skip
    assert more.resumed_from_step == first.steps
    assert more.epochs_done == 4 and more.steps > first.steps


def test_errors_name_the_command_and_the_file(trained, tmp_path) -> None:
    from tagging.student import load_student
    from tagging.student.scorer_apply import ScorerTagger
    from tagging.student.scorer_train import train_scorer

    notes = trained["notes"]
    with pytest.raises(NotFoundError, match="tagllm tag teach"):
        train_scorer(notes, {}, work_dir=tmp_path / "w", out_dir=tmp_path / "m", config=small_config())
    with pytest.raises(NotFoundError, match="tagllm tag teach"):
        train_scorer(notes, {"nobody": []}, work_dir=tmp_path / "w", out_dir=tmp_path / "m")
    broken = tmp_path / "broken"
    shutil.copytree(trained["base"] / "model", broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(NotFoundError, match=r"missing model\.safetensors"):
        load_student(broken)
    with pytest.raises(NotFoundError, match=r"missing model\.safetensors, student\.json"):
        ScorerTagger.load(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"--batch-size must be >= 1, got 0"):
        ScorerTagger.load(trained["base"] / "model", batch_size=0, device="cpu")


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return tiny_synthetic_run(tmp_path_factory, "scorer_run", teach=True)


def test_distill_and_apply_run_with_the_scorer(tiny_run) -> None:
    from features.io import RunDir
    from features.schemas import validate
    from tagging.handbook_model import load_handbook
    from tagging.pipeline import apply_run, distill_run

    figs = distill_run(tiny_run, config=SMALL, progress=False)
    assert figs["distill"]["arch"] == "scorer" and figs["distill"]["steps"] > 0
    assert (tiny_run / "student" / "scorer_ckpt.pt").exists()
    summary = json.loads((tiny_run / "summary.json").read_text())["student"]
    for key in ("f1_vs_teacher", "f1_vs_gold", "ungrounded_f1_vs_teacher", "ungrounded_f1_vs_gold"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["f1_vs_teacher"] > 0.5 and summary["f1_vs_teacher"] > summary["ungrounded_f1_vs_teacher"]
    card = (tiny_run / "student" / "model" / "README.md").read_text()
    assert "scorer" in card and "vs_teacher" in card

    res = apply_run(tiny_run, batch_size=32, progress=False, device="cpu")
    notes = RunDir(tiny_run).read_table("notes")
    tags = validate("tags", pd.read_parquet(tiny_run / "tables" / "tags.parquet"))
    assert res["apply"]["notes"] == len(notes) == len(tags)
    assert set(tags["note_id"]) == set(notes["note_id"])
    assert set(tags["tagger"]) == {"student"} and tags["tagger_version"].iloc[0].startswith("student-")
    boiler = {canonical(b) for b in load_handbook(tiny_run / "handbook.yaml").boilerplate}
    texts = {canonical(t["text"]) for ts in tags["tags"] for t in ts}
    assert boiler and texts and not texts & boiler


def test_a_note_with_nothing_to_read_gets_no_tags(trained) -> None:
    """No title, body or caption beyond boilerplate: no evidence, so no tags (not the category's
    usual ones), in both modes; a note with text in the same category still gets tags."""
    from tagging.student.scorer_apply import ScorerTagger

    empty = [
        NoteInput("e1", "shoes", "", ""),
        NoteInput("e2", "咖啡", "  ", "#热门"),
        NoteInput("e3", "shoes", "", "", image_captions=("",)),
    ]
    with_text = [n for n in trained["notes"] if n.category == "shoes"][:5]
    for grounded in (True, False):
        tagger = ScorerTagger.load(trained["base"] / "model", handbook=trained["handbook"], grounded=grounded)
        results = tagger.tag(empty + with_text)
        assert [r.tags for r in results[: len(empty)]] == [(), (), ()]
        if grounded:
            assert any(r.tags for r in results[len(empty) :])
