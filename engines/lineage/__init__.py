"""Lineage: Nexus documents and dataset events."""
