"""Fakes of the processing side: the ADC pull worker, a push-mode service, their results."""
