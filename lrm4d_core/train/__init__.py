"""Training: config, example sampling, the DDP loop and exact-resume state."""
