"""Every side effect of a job: Postgres, NATS JetStream, Redis, Temporal, as activity classes."""
