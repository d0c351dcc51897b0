"""Two-stage training on accelerate: trainer, checkpoints, EMA."""
