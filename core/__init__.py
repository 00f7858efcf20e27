"""Shared domain of antenna-jobs: settings, states, progress, wire schemas, names, workers' rates.
Pure: no SQL (our tables' is storage/'s, Antenna's antenna_db/'s) and no connections.

Imported by every other package; imports none of them.
"""
