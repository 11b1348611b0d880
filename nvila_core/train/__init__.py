"""Training: datasets from simulator rollouts and robot recordings, and fine-tuning."""
