"""Layers built from the public Tensor ops (filled in by the layers work)."""
