"""Streaming export pipeline for archives of transcribed documents (eScriptorium-compatible)."""

__version__ = "0.1.0"
