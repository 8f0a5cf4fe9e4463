"""The person directory: an encrypted SQLite store, its keys and the audit chain."""
