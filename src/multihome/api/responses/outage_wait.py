"""A background run's write that must not fail for an outage: its checkpoint or final record once the work
it records is done (a model call made, tools called). Raising would have the job run that work again (the
model called twice); waiting for the database, or for the KMS to seal again (unreachable, or refusing until
an operator gives the key or the access back), does not. The worker's lease renewal goes on beside it
(state/worker.py): a lease lost to another replica, a cancel seen there, or a stop cancels the wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ...crypto.errors import KmsError, KmsRefused
from ...outage_log import OutageLog
from ...schema.errors import ApiError
from ...storage.errors import outage

log = logging.getLogger("multihome.responses.background")


# How long a KMS that keeps refusing (a key disabled, access revoked) is waited for: an operator's slip put
# right meanwhile costs no second model call; past it the run raises (its job is tried again, then failed, as
# for any run that raises), so a key revoked for good does not hold a worker's slot for ever.
REFUSED_WAIT_S = 300.0
# A wait may last hours (a KMS unreachable is waited for without end): a reminder this often says it still is.
REMIND_S = 60.0


async def through_outage(response_id: str, checkpoint: Callable[[], Awaitable[bool]]) -> bool:
    """`checkpoint()`, tried again (backoff 0.1 s to 5 s) while the database cannot take it (away, or read-only:
    a standby after a failover) or the KMS cannot seal it (unreachable; refusing, for `REFUSED_WAIT_S` at
    most); any other error raises. One warning per outage, a reminder each `REMIND_S`, a line when it is over."""
    backoff = 0.1
    said = OutageLog(
        log,
        f"background response {response_id}: its checkpoint cannot be written",
        recovered=f"background response {response_id}: its checkpoint is written",
        remind_s=REMIND_S,
        consequence=" until the database takes writes and the KMS seals",
    )
    refused_since: float | None = None
    while True:
        try:
            done = await checkpoint()
        except Exception as exc:
            if outage(exc) is None and not _waited_out(exc):
                raise
            if _refused(exc):
                refused_since = refused_since if refused_since is not None else time.monotonic()
                if time.monotonic() - refused_since >= REFUSED_WAIT_S:
                    raise
            else:
                refused_since = None
            said.failed(exc)
        else:
            said.ok()
            return done
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


_WAITED = frozenset({"storage_unavailable", "kms_unavailable", "kms_refused"})


def _waited_out(exc: Exception) -> bool:
    """Whether `exc` is a 503 a checkpoint waits out: the database's, or the KMS's (raised bare, or as `stored` words it)."""
    return isinstance(exc, KmsError) or (isinstance(exc, ApiError) and exc.status == 503 and exc.body.code in _WAITED)


def _refused(exc: Exception) -> bool:
    return isinstance(exc, KmsRefused) or (isinstance(exc, ApiError) and exc.body.code == "kms_refused")
