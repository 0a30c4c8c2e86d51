"""Training: the accelerate training loop, its configs and checkpoints, and the stages."""
