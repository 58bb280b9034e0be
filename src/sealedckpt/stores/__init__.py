"""Stores on disk or in the OS keyring: keystore, trust store, audit log."""
