"""Contract terms: revenue-share agreements with a cumulative cap, committed-spend agreements,
an idempotent append-only ledger of accruals, reports and the scenario planner.

Deliberately imports nothing: `multihome.storage.tables` may import `contracts.tables` to register
the `contract_`/`ledger_` tables on the shared metadata, so this package must not pull the storage
package in at import time. Import the submodules you need (`contracts.service`, `contracts.report`, ...).
"""
