"""Generated Python code of the TagLLM gRPC API (protos/tagllm/v1/*.proto), version 1.

Do not edit the ``*_pb2*`` modules: regenerate them with ``python scripts/gen_protos.py``
(tests/serving/test_protos.py fails when they are stale). Importing this package imports nothing;
import the modules you need, e.g. ``from serving.api.v1 import tag_features_pb2, tag_features_pb2_grpc``.
"""
