"""The inner fine-tune (one loop for every path), the model a trial trains, process set-up and micro-backbone pre-training."""
