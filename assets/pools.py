"""Dagster pools: deployment-wide caps on how many steps call models at once, across all runs.

A step in a pool waits for a free slot; the limits are set per deployment
(`dagster instance concurrency set llm 4`, done by `deploy/prod.py up`), so one machine or many share the
provider's rate limits. Without a limit set (the embedded default), a pool does not hold steps back.
"""

LLM_POOL = "llm"
"""Steps that call a text model: clusters (naming), ideas, content, image prompts."""

IMAGE_POOL = "images"
"""Steps that call an image model."""
