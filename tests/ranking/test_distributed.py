from __future__ import annotations

import copy

import numpy as np


def test_dmp_two_processes_matches_one_process(tiny_data):
    """DistributedModelParallel, 2 gloo processes, table-wise tables: same loss trajectory as 1 process."""
    import torch

    from ranking.data import build_training_examples
    from ranking.retrieval.distributed import train_dmp, train_reference
    from ranking.retrieval.model import FeatureEncoder, TwoTower
    from ranking.retrieval.train import log_popularity

    data = tiny_data
    ex = build_training_examples(data)
    enc = FeatureEncoder(data, "tags", ex.user, ex.note)
    torch.manual_seed(0)
    model = TwoTower(enc.config(embedding_dim=8, hidden_dim=16, out_dim=8))
    lq = torch.from_numpy(log_popularity(ex.note, data.catalog.num_notes))
    batches = []
    for s in range(5):
        rows = np.arange(s * 64, s * 64 + 64)
        kjts, qs, notes = [], [], []
        for r in range(2):
            b = ex.take(rows[r * 32 : (r + 1) * 32])
            kjts.append(enc.encode(b))
            notes.append(torch.from_numpy(b.note))
            qs.append(lq[notes[-1]])
        batches.append({"kjts": kjts, "log_q": qs, "note": notes})
    ref = train_reference(copy.deepcopy(model), batches, lr=0.5, world=2)
    dmp = train_dmp(model, batches, lr=0.5, world=2, sharding="table_wise")
    assert len(dmp) == len(ref) == 5
    np.testing.assert_allclose(dmp, ref, rtol=1e-3, atol=1e-4)
    assert ref[0] != ref[-1]
