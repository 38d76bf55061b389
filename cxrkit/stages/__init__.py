"""Stage functions: ``run(cfg, force=False) -> Artifact``. These are the public Python API."""
