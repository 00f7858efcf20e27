"""The async_api ML job: publish image tasks to NATS JetStream for pull workers and aggregate
their results."""
