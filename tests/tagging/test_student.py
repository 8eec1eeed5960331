"""The student: target format and parser, constrained decoding, device choice, distill/apply, resume."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import ConfigError, NotFoundError
from tagging.student.format import TagConstraint, decode_ids, encode_target, format_tags, parse_tags
from tagging.types import Tag
from tests.tagging._runs import tiny_synthetic_run

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "arch": "seq2seq", "d_model": 32, "d_ff": 64, "num_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "vocab_size": 400,
    "max_source_tokens": 48, "max_target_tokens": 24, "batch_size": 16, "epochs": 2, "max_steps": 4,
    "checkpoint_every": 2, "warmup_steps": 2, "device": "cpu",
}  # fmt: skip


# --------------------------------------------------------------------------- format


def test_format_round_trip_and_fragments_dropped() -> None:
    tags = [Tag("Cream-White", "colour"), Tag("off white", "colour"), Tag("retro running", "style")]
    text = format_tags(tags)
    assert text == "colour: cream white; off white | style: retro running"
    assert [(t.text, t.dimension) for t in parse_tags(text)] == [
        ("cream white", "colour"), ("off white", "colour"), ("retro running", "style"),
    ]  # fmt: skip
    got = parse_tags("garbage | : x | colour: ; red;; | 风格: 复古 |")
    assert [(t.text, t.dimension) for t in got] == [("red", "colour"), ("复古", "风格")]
    assert all(0 < t.confidence <= 1 for t in got)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parser_never_raises(text: str) -> None:
    for t in parse_tags(text):
        assert t.text and t.dimension and 0 < t.confidence <= 1


@pytest.fixture(scope="module")
def tok():
    from tagging.student.tokenizer import train_tokenizer

    corpus = ["cream white off white retro running colour style", "复古 风格 红色 运动鞋 拿铁"] * 5
    return train_tokenizer(corpus, vocab_size=320)


def test_encode_decode_chinese_and_english(tok) -> None:
    tags = [Tag("cream white", "colour"), Tag("复古", "风格"), Tag("红色", "风格")]
    ids = encode_target(tok, tags, max_tokens=64)
    assert ids[-1] == tok.eos_token_id
    assert decode_ids(tok, ids) == "colour: cream white | 风格: 复古; 红色"
    short = encode_target(tok, tags, max_tokens=6)  # whole values dropped, never half of one
    assert len(short) <= 6 and parse_tags(decode_ids(tok, short))


def test_constrained_random_walks_always_parse_into_allowed_tags(tok) -> None:
    allowed = {
        "shoes": {"colour": {"cream white": ["off white"], "red": []}, "style": {"retro running": []}},
        "food": {"风格": {"复古": [], "红色": []}},
    }
    rng = random.Random(0)
    for grounded in (False, True):
        c = TagConstraint(tok, allowed, max_values=2, grounded=grounded)
        for i in range(200):
            cat = rng.choice(["shoes", "food", "unknown"])
            src = rng.choice(["an off white retro running shoe", "复古红色", "nothing here"])
            prefix: list[int] = []
            while len(prefix) < 60:
                nxt = rng.choice(c.allowed_next(cat, src, prefix))
                prefix.append(nxt)
                if nxt == tok.eos_token_id:
                    break
            assert prefix[-1] == tok.eos_token_id, f"walk {i} did not end"
            text = decode_ids(tok, prefix)
            for t in parse_tags(text):
                section = allowed.get(cat) or {d: v for s in allowed.values() for d, v in s.items()}
                assert t.text in section[t.dimension], text
                if grounded:
                    assert t.text in src or any(f in src for f in section[t.dimension][t.text])
            assert len(parse_tags(text)) == len({(t.dimension, t.text) for t in parse_tags(text)})


# --------------------------------------------------------------------------- config and device


def test_device_selection_on_cpu(monkeypatch) -> None:
    import torch

    from tagging.student.config import StudentConfig, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="--device must be one of auto, cpu, cuda; got 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    with pytest.raises(ConfigError, match="d_model"):
        StudentConfig.from_mapping({"d_model": 30, "num_heads": 4})
    with pytest.raises(ConfigError, match="nonsense"):
        StudentConfig.from_mapping({"nonsense": 1})
    with pytest.raises(ConfigError, match="epochs"):
        StudentConfig.from_mapping(epochs=0)


def test_default_model_is_small() -> None:
    from tagging.student.config import StudentConfig
    from tagging.student.model import build_model, count_parameters

    assert count_parameters(build_model(StudentConfig(), 4000)) <= 30_000_000
    with pytest.raises(ConfigError, match="parameters"):
        build_model(StudentConfig(d_model=1024, d_ff=8192, encoder_layers=8, decoder_layers=8), 32000)


# --------------------------------------------------------------------------- run directory stages


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return tiny_synthetic_run(tmp_path_factory, "student", teach=True)


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("student", "tags.parquet", "tag_vocab.json"))
    return dst


def test_distill_then_apply_end_to_end(tiny_run, tmp_path) -> None:
    from transformers import PreTrainedTokenizerFast

    from features.io import RunDir
    from features.schemas import validate
    from tagging.normalize import TagVocabulary
    from tagging.pipeline import apply_run, distill_run

    run = _copy(tiny_run, tmp_path)
    figs = distill_run(run, config=TINY, progress=False)
    model = run / "student" / "model"
    for f in ("model.safetensors", "config.json", "tokenizer.json", "student.json", "README.md"):
        assert (model / f).exists(), f
    from tagging.student.model import copy_model_class

    meta = json.loads((model / "student.json").read_text())
    assert meta["copy_head"] is True and meta["grounded_share"] >= 0.5  # auto: on for extractive tags
    copy_model_class().from_pretrained(model)  # the documented way to load the network alone
    PreTrainedTokenizerFast.from_pretrained(model)
    card = (model / "README.md").read_text()
    assert "teacher" in card and "vs_teacher" in card
    assert figs["distill"]["steps"] == 4 and figs["distill"]["stopped"] == "max_steps"
    assert {"vs_teacher", "vs_gold", "teacher_vs_gold"} <= set(figs["held_out"])
    split = pd.read_parquet(run / "student" / "split.parquet")
    assert set(split["split"]) <= {"train", "val", "test"} and len(split) == len(
        RunDir(run).read_table("notes")
    )

    res = apply_run(run, batch_size=8, progress=False)
    tags = validate("tags", pd.read_parquet(run / "tables" / "tags.parquet"))
    assert len(tags) == res["apply"]["notes"] and set(tags["tagger"]) == {"student"}
    assert tags["tagger_version"].iloc[0].startswith("student-")
    vocab = TagVocabulary.load(run / "tag_vocab.json")
    assert vocab.tokens[0] == "<pad>" and res["apply"]["vocab_size"] == len(vocab)
    summary = json.loads((run / "summary.json").read_text())["student"]
    assert {"f1_vs_teacher", "f1_vs_gold", "notes_per_s", "distill", "apply"} <= set(summary)


def test_resume_continues_from_checkpoint(tiny_run, tmp_path) -> None:
    from tagging.pipeline import distill_run

    run = _copy(tiny_run, tmp_path)
    first = distill_run(run, config=TINY, progress=False, evaluate=False)
    assert first["distill"]["resumed_from_step"] == 0
    again = distill_run(run, config={**TINY, "max_steps": 6}, progress=False, evaluate=False)
    assert again["distill"]["resumed_from_step"] == 4 and again["distill"]["steps"] == 6
    other = distill_run(run, config={**TINY, "max_steps": 6, "seed": 1}, progress=False, evaluate=False)
    assert other["distill"]["resumed_from_step"] == 0  # another seed: a fresh start, not a mix


def test_killed_distill_resumes(tiny_run, tmp_path) -> None:
    run = _copy(tiny_run, tmp_path)
    cfg = {**TINY, "max_steps": 0, "epochs": 50, "checkpoint_every": 1}
    code = (
        f"from tagging.pipeline import distill_run; distill_run({str(run)!r}, config={cfg!r}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "TAGLLM_QUIET": "1"})
    last = run / "student" / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert last.exists(), "the training process never wrote a checkpoint"
    import torch

    step = torch.load(last, weights_only=False)["state"]["step"]
    from tagging.pipeline import distill_run

    figs = distill_run(run, config={**cfg, "max_steps": step + 2}, progress=False, evaluate=False)
    assert figs["distill"]["resumed_from_step"] == step > 0
    assert figs["distill"]["steps"] == step + 2


def test_bad_input_names_the_option(tiny_run, tmp_path) -> None:
    from click.testing import CliRunner

    from tagging.cli import tag
    from tagging.pipeline import apply_run, distill_run

    with pytest.raises(NotFoundError, match="--teacher-table 'nope'"):
        distill_run(tiny_run, teacher_table="nope", config=TINY, progress=False)
    with pytest.raises(NotFoundError, match="--model"):
        apply_run(tiny_run, model_dir=tmp_path / "missing", progress=False)
    with pytest.raises(ConfigError, match="student config is invalid: d_ff"):
        distill_run(tiny_run, config={**TINY, "d_ff": -1}, progress=False)
    import torch

    if not torch.cuda.is_available():
        res = CliRunner().invoke(
            tag, ["distill", "--run", str(tiny_run), "--device", "cuda", "--max-minutes", "0.01"]
        )
        assert isinstance(res.exception, ConfigError) and "--device cuda" in str(res.exception)
    res = CliRunner().invoke(tag, ["apply", "--run", str(tiny_run), "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size" in res.output


def test_same_seed_same_weights(tiny_run, tmp_path) -> None:
    from tagging.pipeline import distill_run
    from tagging.student.apply import model_version

    versions = []
    for name in ("a", "b"):
        run = _copy(tiny_run, tmp_path / name)
        distill_run(run, config={**TINY, "max_steps": 2}, progress=False, evaluate=False)
        versions.append(model_version(run / "student" / "model"))
    assert versions[0] == versions[1]


# --------------------------------------------------------------------------- copy head


def _tiny_copy_model(vocab: int = 50):
    from tagging.student.config import StudentConfig
    from tagging.student.model import build_model

    cfg = StudentConfig(d_model=16, d_ff=32, num_heads=2, encoder_layers=1, decoder_layers=1, copy_head="on")
    return build_model(cfg, vocab)


def test_copy_head_outputs_a_distribution_that_can_copy() -> None:
    import torch

    model = _tiny_copy_model().eval()
    src = torch.tensor([[7, 8, 9, 1, 0], [11, 12, 1, 0, 0]])
    mask = (src != 0).long()
    labels = torch.tensor([[9, 8, 1], [12, 1, -100]])
    out = model(input_ids=src, attention_mask=mask, labels=labels)
    probs = out.logits.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3), atol=1e-4)
    assert torch.isfinite(out.loss)
    # with the gate shut, all mass is on the note's own (unpadded) tokens
    with torch.no_grad():
        model.copy_gate.weight.zero_()
        model.copy_gate.bias.fill_(-30.0)
    probs = model(input_ids=src, attention_mask=mask, labels=labels).logits.exp()
    assert probs[0, :, [7, 8, 9, 1]].sum(-1).min() > 0.99
    assert probs[1, :, [11, 12, 1]].sum(-1).min() > 0.99
    assert probs[:, :, 0].max() < 1e-6  # padding gets no copy mass


def test_copy_head_learns_to_copy_faster_than_plain_t5() -> None:
    """Target = the source's 2nd token (never the same id twice in training): pointing is trivial,
    recalling the id from the weights is not."""
    import torch

    from tagging.student.config import StudentConfig
    from tagging.student.model import build_model

    def accuracy(copy_head: str) -> float:
        torch.manual_seed(0)
        cfg = StudentConfig(
            d_model=32,
            d_ff=64,
            num_heads=2,
            encoder_layers=1,
            decoder_layers=1,
            dropout=0.0,
            copy_head=copy_head,
        )
        model = build_model(cfg, 300)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(120):
            src = torch.randint(10, 300, (32, 6), generator=g)
            src[:, -1] = 1
            labels = torch.stack([src[:, 1], torch.ones(32, dtype=torch.long)], 1)
            loss = model(input_ids=src, attention_mask=torch.ones_like(src), labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        src = torch.randint(10, 300, (256, 6), generator=g)
        src[:, -1] = 1
        labels = torch.stack([src[:, 1], torch.ones(256, dtype=torch.long)], 1)
        with torch.no_grad():
            pred = (
                model(input_ids=src, attention_mask=torch.ones_like(src), labels=labels)
                .logits[:, 0]
                .argmax(-1)
            )
        return float((pred == src[:, 1]).float().mean())

    copy, plain = accuracy("on"), accuracy("off")
    assert copy > 0.9, copy
    assert copy > plain + 0.3, (copy, plain)


def test_plain_t5_student_without_copy_head(tiny_run, tmp_path) -> None:
    from transformers import T5ForConditionalGeneration

    from tagging.pipeline import apply_run, distill_run
    from tagging.student.apply import StudentTagger

    run = _copy(tiny_run, tmp_path)
    distill_run(run, config={**TINY, "copy_head": "off"}, progress=False, evaluate=False)
    model_dir = run / "student" / "model"
    meta = json.loads((model_dir / "student.json").read_text())
    assert meta["copy_head"] is False
    T5ForConditionalGeneration.from_pretrained(model_dir)
    tagger = StudentTagger.load(model_dir, num_beams=2, batch_size=4)
    assert type(tagger.model).__name__ == "T5ForConditionalGeneration" and not tagger.copy_head
    assert apply_run(run, batch_size=8, progress=False)["apply"]["notes"] > 0
