"""The face pipeline: detect → face mesh → quality → align → embed. Pure computation over
in-memory images; the only I/O is loading the models."""
