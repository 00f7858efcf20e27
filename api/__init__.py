"""The HTTP front door: job actions and the ADC worker-facing endpoints."""
