"""AI content pipeline: stage logic, store, model engine and prompts.

Nothing in this package imports Dagster except the two entry points, `pipeline.definitions`
(the Dagster code location) and `pipeline.cli` (the `pipeline` console script).
"""
