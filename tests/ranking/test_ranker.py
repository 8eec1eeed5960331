from __future__ import annotations

import numpy as np
import pytest

from features.errors import ConfigError
from ranking.ranker import FEATURES, RankerConfig, ranker_features, ranking_examples, train_ranker


def test_ranker_features_point_in_time_and_training(tiny_data):
    data = tiny_data
    cfg = RankerConfig(n_estimators=20, window_days=10)
    ex = ranking_examples(data, data.cutoff_s - 10 * 86400, data.cutoff_s, cfg)
    assert 0 < ex.label.mean() < 1
    frame = ranker_features(data, ex)
    assert list(frame.columns) == list(FEATURES)
    # note stats count only events strictly before the example
    inter = data.interactions
    i = int(np.flatnonzero(ex.label > 0)[0])
    m = (inter.note == ex.note[i]) & (inter.event == "impression") & (inter.ts < ex.ts[i])
    assert frame["note_impressions"].iloc[i] == m.sum()
    # the tag-match features see the planted preference: clicked rows overlap more
    assert frame["tag_weighted"][ex.label > 0].mean() > frame["tag_weighted"][ex.label == 0].mean()
    ranker = train_ranker(frame, ex, cfg)
    assert ranker.predict(frame).shape == (len(ex),)
    lr = train_ranker(frame, ex, RankerConfig(objective="lambdarank", n_estimators=5))
    assert set(lr.importance()) == set(FEATURES)


def test_ranker_config_errors():
    with pytest.raises(ConfigError, match="objective"):
        RankerConfig(objective="xendcg2")


def test_ranker_with_lightgbm_dask_local_cluster(tiny_data):
    """lightgbm.dask on a 2-worker LocalCluster reaches the same AUC as the local booster (±0.05)."""
    pytest.importorskip("distributed")
    import dask.array as da
    import lightgbm as lgb
    from distributed import Client, LocalCluster

    from ranking.retrieval.evaluate import auc

    data = tiny_data
    ex = ranking_examples(data, 0.0, data.cutoff_s, RankerConfig())
    x = ranker_features(data, ex)[list(FEATURES)].to_numpy(np.float32)
    y = ex.label
    local = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(x, y)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        dx = da.from_array(x, chunks=(len(x) // 2 + 1, x.shape[1]))
        dy = da.from_array(y, chunks=len(x) // 2 + 1)
        model = lgb.DaskLGBMClassifier(client=client, n_estimators=30, num_leaves=15, verbose=-1)
        model.fit(dx, dy)
        p_dask = model.predict_proba(dx)[:, 1].compute()
    a_local = auc(y, local.predict_proba(x)[:, 1])
    a_dask = auc(y, p_dask)
    assert a_dask > 0.6
    assert abs(a_dask - a_local) < 0.05
