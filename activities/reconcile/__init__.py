"""The periodic repair: jobs whose workflow closed without a final row, and what finished jobs
left behind."""
