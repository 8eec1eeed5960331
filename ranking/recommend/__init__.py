"""The in-memory recommend pipeline (retrieval + ranker + reasons + cold start), in these parts:

- ``recommender``: :class:`Recommender` — retrieve, score, explain; add a note, observe an event.
- ``exploration``: :class:`Exploration` — the serving policy for fresh notes (none, a fixed quota, UCB
  or Thompson sampling over a Beta posterior around the ranker's click probability).
- ``live_catalog``: :class:`LiveCatalog` — the notes, their tags, counts, embeddings and ANN index.
- ``users``: :class:`UserStates` — histories, user embeddings, tag profiles.
- ``search`` and ``results``: candidate retrieval and ranker scores; the returned lists and their reasons.
- ``load``: reading a run's retrieval model and ranker.

Importing this package is cheap: torch, faiss and lightgbm load when a recommender is built.
"""

from ranking.recommend.exploration import Exploration
from ranking.recommend.load import load_ranker, load_retrieval
from ranking.recommend.recommender import Recommender
from ranking.recommend.values import AddedNote, Filters, Recommendation

__all__ = [
    "AddedNote",
    "Exploration",
    "Filters",
    "Recommendation",
    "Recommender",
    "load_ranker",
    "load_retrieval",
]
