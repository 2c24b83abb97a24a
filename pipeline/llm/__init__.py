"""The one engine for model calls: providers, the model/price catalog, the call ledger."""
