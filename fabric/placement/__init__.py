"""Fault-domain-aware placement of replicas and strips."""
