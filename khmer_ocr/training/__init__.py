"""Training: data loading, losses, schedules, the trainer and the phase configurations."""
