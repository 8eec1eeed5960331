"""KuaiRec must-show: the data-driven boilerplate filter vs independently labelled hashtags.

The filter (tagging.handbook.boilerplate_phrases) is fitted on a random half A of the notes. The
labels are made on the other half B, by rules that do not use the filter:

- **boilerplate** = a hashtag containing one of the platform/engagement-bait keywords below
  (asking for traffic, thanking the platform or its officials, promotion tools, "follow/like" bait).
  "快手" (the platform's name) alone is not a keyword: "快手舞蹈大赛" names a topic.
- **category-specific** = not boilerplate, used by >= 3 notes of half B, >= 80% of them in one
  first-level category.

Rates are over hashtag types of half B (and, reported too, weighted by how often they are used).
The notes are loaded as published (the adapter's default ``hashtags="keep"``), so the creators'
hashtags are in the body text too, as the taggers see them; the labels use the raw hashtags
(``reference_tags`` = topic_tag).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from tagging.handbook import HandbookConfig, boilerplate_phrases, extract_candidates, is_platform_noise
from tagging.normalize import canonical, is_cjk

KEYWORDS = [
    "热门",
    "熱門",
    "推广",
    "官方",
    "感谢",
    "谢谢",
    "小助手",
    "创作者",
    "双击",
    "关注",
    "点赞",
    "涨粉",
    "流量",
    "限流",
    "官大大",
    "主播中心",
    "商家号",
    "快影",
    "一键出片",
    "正能量",
    "拍点啥",
    "申请",
    "上新",
    "高清",
]


@pytest.mark.integration
def test_kuairec_boilerplate_filter(shared_data) -> None:
    from features.datasets import kuairec

    notes = kuairec.load(str(shared_data("kuairec-captions"))).tables["notes"]
    half_a = np.random.default_rng(0).random(len(notes)) < 0.5
    a, b = notes[half_a].reset_index(drop=True), notes[~half_a].reset_index(drop=True)
    cfg = HandbookConfig()
    boiler, noise = boilerplate_phrases(list(a["category"]), extract_candidates(a, cfg), cfg)

    def removed(t: str) -> bool:
        return t in boiler or (is_cjk(t) and is_platform_noise(t, noise, cfg.noise_word_share))

    uses: Counter[str] = Counter()
    by_cat: dict[str, Counter[str]] = defaultdict(Counter)
    for cat, tags in zip(b["category"], b["reference_tags"], strict=True):
        for t in {canonical(x) for x in tags} - {""}:
            uses[t] += 1
            by_cat[t][cat] += 1
    bp = [t for t in uses if any(k in t for k in KEYWORDS)]
    spec = [
        t for t in uses if t not in bp and uses[t] >= 3 and by_cat[t].most_common(1)[0][1] / uses[t] >= 0.8
    ]
    removal = sum(map(removed, bp)) / len(bp)
    keep = sum(not removed(t) for t in spec) / len(spec)
    print(f"boilerplate types {len(bp)} removed {removal:.3f}; category-specific {len(spec)} kept {keep:.3f}")
    assert len(bp) > 100 and len(spec) > 30
    assert removal >= 0.9
    assert keep >= 0.8
