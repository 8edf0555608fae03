"""The admin pages' plain-language copy, kept in explanations.py (the CLI prints the same words)."""

from explanations import EXPLANATIONS, explain

__all__ = ["EXPLANATIONS", "explain"]
