"""Retrieval: metrics and evaluation (and the gallery index and search)."""
