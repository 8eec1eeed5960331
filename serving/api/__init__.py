"""Generated gRPC code, one sub-package per API version (``v1``: wire package ``tagllm.v1``)."""
