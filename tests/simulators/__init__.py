"""Tests for multihome.simulators."""
