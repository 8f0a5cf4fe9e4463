"""Adapters to the native TFLite runtime and the model manifest."""
