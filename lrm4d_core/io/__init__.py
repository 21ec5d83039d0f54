"""File formats: model checkpoints (`io.checkpoint`: safetensors + JSON config, never pickle)."""
