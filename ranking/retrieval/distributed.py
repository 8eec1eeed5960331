"""Two-tower training under TorchRec ``DistributedModelParallel`` (gloo on CPU, NCCL on GPUs).

:func:`train_dmp` spawns ``world_size`` processes; each takes its slice of every global batch, the
embedding tables are sharded (``table_wise`` by default) with a fused SGD optimizer, the towers are
data-parallel. :func:`train_reference` runs the same steps in one process (loss = mean of the
per-slice losses) so a test can compare loss trajectories.

Gradient scaling (measured): DDP averages the dense gradients over ranks and the sharded tables'
fused optimizer sees the rank-averaged gradient too, so one process minimizing the mean of the
per-slice losses with the same SGD learning rate reproduces the 2-process trajectory (to ~1e-6).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["train_dmp", "train_reference"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slice(batch: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """The rank's share of a global batch given as {'kjts': [per-rank KJT], 'log_q', 'note'}."""
    return {"kjt": batch["kjts"][rank], "log_q": batch["log_q"][rank], "note": batch["note"][rank]}


def train_reference(
    model: Any, batches: list[dict[str, Any]], lr: float, world: int, table_scale: float = 1.0
) -> list[float]:
    """Single-process SGD equivalent of :func:`train_dmp` (see module docstring)."""
    from ranking.retrieval.model import in_batch_softmax_loss

    dense = [p for n, p in model.named_parameters() if not n.startswith("ebc.")]
    tables = [p for n, p in model.named_parameters() if n.startswith("ebc.")]
    opt = torch.optim.SGD([{"params": dense, "lr": lr}, {"params": tables, "lr": lr * table_scale}])
    losses = []
    for batch in batches:
        parts = []
        for r in range(world):
            s = _slice(batch, r, world)
            u, i = model(s["kjt"])
            parts.append(in_batch_softmax_loss(u, i, s["log_q"], s["note"], model.config.temperature))
        loss = torch.stack(parts).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _worker(rank: int, world: int, port: int, path: str, lr: float, sharding: str) -> None:
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingEnv

    from ranking.retrieval.model import TwoTower, in_batch_softmax_loss

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        payload = torch.load(path, weights_only=False)
        model = TwoTower(payload["config"])
        model.load_state_dict(payload["state_dict"])
        sharder = EmbeddingBagCollectionSharder(
            fused_params={"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": lr}
        )
        constraints = {t.name: ParameterConstraints(sharding_types=[sharding]) for t in model.config.tables()}
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=world, compute_device="cpu"), constraints=constraints
        )
        pg = dist.GroupMember.WORLD
        plan = planner.collective_plan(model, [sharder], pg)
        dmp = DistributedModelParallel(
            model,
            env=ShardingEnv.from_process_group(pg),
            device=torch.device("cpu"),
            plan=plan,
            sharders=[sharder],
        )
        # Sharded tables start from the reference weights (sharding re-initializes them).
        full = payload["state_dict"]
        with torch.no_grad():
            for name, value in dmp.state_dict().items():
                key = name.replace("module.", "", 1) if name.startswith("module.") else name
                if hasattr(value, "local_shards"):
                    for shard in value.local_shards():
                        o = shard.metadata.shard_offsets
                        sz = shard.metadata.shard_sizes
                        shard.tensor.copy_(full[key][o[0] : o[0] + sz[0], o[1] : o[1] + sz[1]])
        dense = [p for n, p in dmp.named_parameters() if "ebc." not in n]
        opt = torch.optim.SGD(dense, lr=lr)
        losses = []
        for batch in payload["batches"]:
            s = _slice(batch, rank, world)
            u, i = dmp(s["kjt"])
            loss = in_batch_softmax_loss(u, i, s["log_q"], s["note"], model.config.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            # The logged loss is the global mean, comparable with the reference.
            t = loss.detach().clone()
            dist.all_reduce(t)
            losses.append(float(t) / world)
        if rank == 0:
            torch.save(losses, Path(path).with_suffix(".losses"))
    finally:
        dist.destroy_process_group()


def train_dmp(
    model: Any, batches: list[dict[str, Any]], lr: float, world: int = 2, sharding: str = "table_wise"
) -> list[float]:
    """Train a copy of ``model`` with DistributedModelParallel in ``world`` processes (gloo).

    Args:
        model: a TwoTower (its weights are the starting point; it is not modified).
        batches: global batches ``{'kjts': [KJT per rank], 'log_q': [...], 'note': [...]}``.
        lr: SGD learning rate (dense and fused table optimizer).
        world: processes.
        sharding: ``table_wise``, ``column_wise`` or ``data_parallel``.

    Returns:
        the per-step global mean loss.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "payload.pt")
        torch.save({"config": model.config, "state_dict": model.state_dict(), "batches": batches}, path)
        mp.spawn(_worker, args=(world, _free_port(), path, lr, sharding), nprocs=world, join=True)
        return list(torch.load(Path(path).with_suffix(".losses"), weights_only=False))
