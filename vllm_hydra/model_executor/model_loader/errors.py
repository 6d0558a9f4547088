"""The error a failed weight load raises: it names the files and every tensor at fault."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """Weights that cannot be loaded: unreadable files, or tensors missing, unexpected or
    mis-shaped for the architecture."""
