"""The bridge between Antenna's Celery broker and our workflows: run_job messages in, crop tasks
(create_detection_images) out."""
