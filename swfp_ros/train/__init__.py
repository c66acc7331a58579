"""Training workspaces and runners: BC pre-training, in-process online fine-tuning, baselines, evaluation."""
