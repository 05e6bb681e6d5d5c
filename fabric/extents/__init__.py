"""Extents: policies, content ids, compression and checksums (pure functions)."""
