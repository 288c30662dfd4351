"""Usage metering, prices, budgets and rate limits (shared across replicas through Redis).

Kept import-light on purpose: the storage migrations import `metering.tables`. Import from the
submodules: `metering.service.Metering`, `metering.limiter.Limiter`, `config.metering.MeteringConfig`.
"""
