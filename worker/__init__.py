"""The worker process: clients, Temporal workers, metrics and shutdown."""
