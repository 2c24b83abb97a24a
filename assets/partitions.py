"""The `sites` dynamic partitions: one partition per site, keyed by slug."""

from dagster import DynamicPartitionsDefinition

sites_partitions = DynamicPartitionsDefinition(name="sites")
