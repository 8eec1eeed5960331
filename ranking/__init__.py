"""Ranking: the models that turn tags into recommendations. Imports ``features`` and ``tagging`` only
(never grpc, never ab_analysis).

- ``data``: the note catalog, run data, training examples, user states (parquet);
  ``feast_data``: the same training inputs from Feast, point in time.
- ``retrieval/``: the TorchRec two-tower model (``model``), its training (``train``, ``distributed``),
  the ANN index (``index``), offline evaluation (``evaluate``) and peers (``peers``).
- ``ranker``: the LightGBM ranker and its features.
- ``recommend/``: the in-memory recommend pipeline, split by the data each part owns
  (``live_catalog``: notes, tags, embeddings and the index, ``add_note``; ``users``: histories,
  embeddings, profiles; ``recommender``: retrieve, score, explain).
- ``pipeline``: the ``retrieval`` and ``ranker`` stages; ``cli``: ``tagllm train`` / ``tagllm eval``.
"""
