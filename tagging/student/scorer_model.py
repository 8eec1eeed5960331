"""The scorer student's network: a hashed n-gram note encoder, a known-tag classifier and a candidate scorer.

Shapes: B notes, C candidates in the batch (all notes together), K known tags, D embedding size,
F candidate features.

- **Note encoder**: an ``EmbeddingBag`` (mean) over hashed character n-grams of the note's category,
  title, body and hashtags (fastText-style; no tokenizer to train, any script), then a LayerNorm'd
  MLP: ``h`` (B, D).
- **Known-tag head** (abstractive): ``h @ W.T + b`` (B, K): one logit per tag the teacher used at
  least ``min_tag_count`` times in training.
- **Candidate head**: the candidate's standardized features and an is-known flag (optionally also its
  own n-gram embedding ``c`` (C, D) through the same table, ``c * h`` and ``h``) -> MLP -> a logit (C,).

Both heads output logits; :class:`~tagging.student.scorer_apply.ScorerTagger` turns them into
calibrated probabilities (a temperature per head, fitted on validation notes).

Example::

    model = TagScorer(buckets=1 << 12, dim=16, hidden=32, n_known=10, n_features=N_FEATURES)
    tag_logits, cand_logits = model(batch)   # (B, 10), (C,)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["N_FEATURES", "Batch", "TagScorer"]

from tagging.student.scorer_data import N_FEATURES


@dataclass
class Batch:
    """A batch as flat tensors (EmbeddingBag inputs are values + offsets).

    Attributes:
        note_ids: (N_ngrams,) hashed n-gram ids of every note, concatenated.
        note_offsets: (B,) start of each note's n-grams in ``note_ids``.
        note_weights: (N_ngrams,) tf-idf weight of each n-gram (L2-normalized per note).
        cand_ids: (N_cngrams,) hashed n-gram ids of every candidate, concatenated.
        cand_offsets: (C,) start of each candidate's n-grams.
        cand_weights: (N_cngrams,) 1 / (the candidate's n-gram count): a mean.
        cand_note: (C,) the note (row of the batch) each candidate belongs to.
        cand_known: (C,) the candidate's known-tag index, or -1.
        cand_features: (C, F) float features.
        tag_targets: (B, K) multi-hot teacher tags among the known tags (training only).
        cand_targets: (C,) 1.0 when the candidate is a teacher tag (training only).
    """

    note_ids: torch.Tensor
    note_offsets: torch.Tensor
    note_weights: torch.Tensor
    cand_ids: torch.Tensor
    cand_offsets: torch.Tensor
    cand_weights: torch.Tensor
    cand_note: torch.Tensor
    cand_known: torch.Tensor
    cand_features: torch.Tensor
    tag_targets: torch.Tensor | None = None
    cand_targets: torch.Tensor | None = None

    def to(self, device: str) -> Batch:
        moved = {k: (v.to(device) if v is not None else None) for k, v in self.__dict__.items()}
        return Batch(**moved)  # type: ignore[arg-type]


class TagScorer(nn.Module):
    """Scores known tags and candidates for a batch of notes.

    Args:
        buckets: size of the hashed n-gram table.
        dim: embedding size D.
        hidden: candidate-MLP width.
        n_known: number of known tags K (>= 1).
        n_features: candidate features F.
        dropout: dropout in both MLPs.
        embed_dropout: dropout on the candidate head's embedding inputs (``c``, ``c * h``, ``h``), which
            can memorize training notes; the candidate features are not dropped.
    """

    idf: torch.Tensor
    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(
        self,
        buckets: int,
        dim: int,
        hidden: int,
        n_known: int,
        n_features: int,
        dropout: float = 0.1,
        embed_dropout: float = 0.0,
        candidate_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="sum", sparse=True)
        nn.init.normal_(self.embed.weight, std=0.1)
        # inverse document frequency per bucket (fitted on the training notes; saved with the weights)
        self.register_buffer("idf", torch.ones(buckets))
        # candidate-feature standardization (fitted on the training candidates)
        self.register_buffer("feat_mean", torch.zeros(n_features))
        self.register_buffer("feat_std", torch.ones(n_features))
        self.note = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.known = nn.Linear(dim, n_known)
        self.candidate_embeddings = candidate_embeddings
        self.cand_norm = nn.LayerNorm(dim)
        self.embed_drop = nn.Dropout(embed_dropout)
        width = n_features + 1 + (3 * dim if candidate_embeddings else 0)
        self.cand = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (known-tag logits (B, K), candidate logits (C,))."""
        h = self.note(self.embed(batch.note_ids, batch.note_offsets, batch.note_weights))  # (B, D)
        tag_logits = self.known(h)  # (B, K)
        if batch.cand_offsets.numel() == 0:
            return tag_logits, h.new_zeros(0)
        feats = (batch.cand_features - self.feat_mean) / self.feat_std  # (C, F)
        is_known = (batch.cand_known >= 0).to(h.dtype)[:, None]  # (C, 1)
        parts = [feats, is_known]
        if self.candidate_embeddings:
            c = self.cand_norm(self.embed(batch.cand_ids, batch.cand_offsets, batch.cand_weights))  # (C, D)
            hc = h[batch.cand_note]  # (C, D)
            parts.insert(0, self.embed_drop(torch.cat([c, c * hc, hc], dim=1)))  # (C, 3D)
        # The known-tag head's logit is deliberately not an input: that head fits its training notes
        # closely, so its logit is far more telling on them than on unseen notes (a leak).
        return tag_logits, self.cand(torch.cat(parts, dim=1)).squeeze(-1)

    def sparse_parameters(self) -> list[torch.Tensor]:
        return [self.embed.weight]

    def dense_parameters(self) -> list[torch.Tensor]:
        return [p for n, p in self.named_parameters() if not n.startswith("embed.")]
