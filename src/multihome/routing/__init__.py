"""Catalog of deployments, planning, and the attempt loop that walks a plan."""
