"""The composition root: the ``tagllm`` command, the demo, the simulated online experiment and the
benchmarks. It imports every other package; no package imports it.

- ``cli``: one lazily imported command group per package (``tagllm data|tag|features|train|eval|serve|
  client|ab|bench|demo``).
- ``demo``: the main job end to end on the synthetic community.
- ``simulate``: the simulated A/B experiment (composes ``ranking`` with ``ab_analysis``).
- ``bench``: every benchmark (JSON figures with the ratio to the peer measured in the same run).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
