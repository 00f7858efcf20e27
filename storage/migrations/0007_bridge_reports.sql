-- What each bridge process last saw of Antenna's broker (issue 16): connected or not, the jobs
-- queue's depth and consumers (others than the bridge: a leftover Antenna worker taking Runs),
-- and the dead-letter queue's depth. Written every few seconds by `antenna-jobs bridge`, read by
-- `antenna-jobs status` and /metrics; a report older than a minute means the bridge is not running.
CREATE TABLE bridge_reports (
    queue text PRIMARY KEY,
    connected boolean NOT NULL,
    queue_depth integer,
    consumers integer,
    foreign_consumers integer,
    dead_lettered integer,
    error text,
    reported_at timestamptz NOT NULL DEFAULT now()
);
