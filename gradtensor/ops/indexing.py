"""Indexing: __getitem__ (basic, integer-array and boolean) and gather-style functions."""

__all__ = []
