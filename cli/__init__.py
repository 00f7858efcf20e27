"""The ``antenna-jobs`` command line: local stack, processes, job actions, fake worker, demo."""
