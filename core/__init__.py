"""Shared domain of antenna-jobs: settings, states, progress, wire schemas, names, schema.

Imported by workflows, activities, worker, api and cli; imports none of them.
"""
