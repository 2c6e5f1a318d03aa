"""Saving and loading state dicts in the safetensors format."""
