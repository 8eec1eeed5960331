"""Serving: the TagLLM gRPC API (tag features, recommendations, tagging) over grpc.aio.

The only package that imports grpc. ``api/v1/`` holds the code generated from ``protos/tagllm/v1``
(``scripts/gen_protos.py``); ``core`` answers requests in plain Python (catalog, recommender, tagger,
Feast sink); ``servicers`` adapt it to the generated stubs; ``server`` owns the lifecycle (config,
interceptor, health, reflection, graceful stop); ``metrics`` the Prometheus counters; ``client`` and
``client_cli`` call a running server; ``demo`` is the demo's serving stage; ``cli`` is ``tagllm serve``.
"""
