"""Two-tower retrieval: the model (``model``), its training (``train``, ``distributed``), the ANN index
(``index``), offline evaluation (``evaluate``) and the peer scorers it is compared with (``peers``).

``model``, ``train`` and ``distributed`` import torch/torchrec at import time: import them lazily.
"""
