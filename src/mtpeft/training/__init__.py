"""Training: config, batching, task schedules, loss weighting, the multi-task model and the loop."""
