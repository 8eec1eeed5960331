"""Every benchmark of the project: ``tagllm bench ...`` (``cli``) and the ``python -m`` modules
(``ranking``, ``serving``, ``student``, ``ab``); each prints JSON with its figures and the ratio to the
peer measured in the same run. Benchmarks sit at the composition root because they compose packages
(a serving benchmark starts a Feast server next to ours)."""
