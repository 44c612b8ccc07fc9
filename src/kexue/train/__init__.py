"""Training tools: seeding in one place (and, as the training-tools post lands, EMA, capture, checkpoints)."""
