"""The `sites` dynamic partitions: one partition per site, keyed by slug."""

from dagster import DynamicPartitionsDefinition

from pipeline.sites import SITES_PARTITION

sites_partitions = DynamicPartitionsDefinition(name=SITES_PARTITION)
