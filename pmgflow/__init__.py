"""pmgflow: pre-train video models on pseudo-motion videos made from still images."""

__version__ = "0.1.0"
