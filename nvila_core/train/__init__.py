"""Training: episode datasets and mixtures (data), the trainer, stage recipes and torchrun support.

Also datasets from robot recordings (mcap_import), fine-tuning modes (finetune), DeltaLoss data
pruning (deltaloss) and FP8 training (fp8). See docs/training.md.
"""
