"""Config sections, one module per stage, composed by the pipeline config."""
