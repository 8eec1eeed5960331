"""Features: dataset adapters, canonical table schemas, run directories and Feast features.

The bottom layer (imports no sibling package) and the only one that talks to Feast. ``io.RunDir`` is
the run-directory contract (every artifact's path named once); ``vocab.TagVocabulary`` is the one tag
vocabulary; ``compute`` / ``feast_repo`` / ``client`` turn tags into Feast features and read them back.
Imports nothing heavy at import time.
"""
