"""Releases: sealed model directories and their signed manifests (no torch)."""
