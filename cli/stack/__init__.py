"""The local stack: embedded servers (Temporal, Postgres, Redis, NATS) and child processes."""
