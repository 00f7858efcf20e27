"""Test helpers, one module a subject: the API in-process (api), Antenna's database (antenna),
reading what a job left (db), making jobs and their synthetic results (jobs), Temporal workers
and a simulated ADC worker (temporal), real processes and servers a test owns (processes),
holds and exactly-once checks of the chaos tests (chaos), RabbitMQ (broker)."""
