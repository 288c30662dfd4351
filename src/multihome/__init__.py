"""Multihome: one OpenAI-compatible gateway in front of every AI cloud."""

__version__ = "0.1.0"
