"""The person directory: an encrypted SQLite store, its keys, retention and the audit chain."""
