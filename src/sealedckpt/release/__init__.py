"""Releases: sealed model directories and their signed manifests, single-file conversions,
rollback checks. Only loading a directory (``loading``) and the legacy converter need torch."""
