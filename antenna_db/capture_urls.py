"""How a capture's URL is made, as SQL (shared by collect, publish and exports)."""

# Antenna's SourceImage.url(): the capture's public base URL (else its station's storage's),
# joined with its path. NULL when there is none: such an image is counted failed when queued.
# What a capture without a URL is failed with, when queued or posted.
NO_URL_ERROR = "image has no URL"

CAPTURE_URL = """
CASE WHEN si.id IS NULL OR si.path = ''
       OR coalesce(nullif(si.public_base_url, ''), nullif(ds.public_base_url, '')) IS NULL
     THEN NULL
     ELSE rtrim(coalesce(nullif(si.public_base_url, ''), ds.public_base_url), '/')
          || '/' || ltrim(si.path, '/')
END"""
CAPTURE_JOINS = """
LEFT JOIN main_sourceimage si ON si.id = ji.source_image_id
LEFT JOIN main_deployment dep ON dep.id = si.deployment_id
LEFT JOIN main_s3storagesource ds ON ds.id = dep.data_source_id"""
