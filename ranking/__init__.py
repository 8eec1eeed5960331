"""Ranking: retrieval, ANN index, ranker, recommend pipeline, gRPC serving, A/B simulator."""
