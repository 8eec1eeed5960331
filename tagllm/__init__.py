"""TagLLM command-line entry point and shared run-directory conventions.

The domain packages (``features``, ``tagging``, ``ranking``, ``ab_analysis``) are siblings of this one;
this package only composes their command groups into one ``tagllm`` CLI.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
