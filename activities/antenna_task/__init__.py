"""Job types whose code is Antenna's: run_job sent to Antenna's Celery worker and watched."""
