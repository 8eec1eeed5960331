"""Features: dataset adapters, canonical table schemas, run directories and Feast features.

The only package that talks to Feast. Imports nothing heavy at import time.
"""
