"""The sync_api ML job: post the images in batches to a push-mode processing service."""
