"""INTERNAL jobs: populate a capture collection, export data."""
