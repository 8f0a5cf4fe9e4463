"""Face API semantics over the pipeline and the directory."""
