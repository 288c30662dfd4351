"""A background run's checkpoint through an outage (api/responses/outage_wait.py): the database or the KMS
away is waited for, a KMS that keeps refusing only so long, anything else raises at once."""

from __future__ import annotations

import logging

import pytest

from multihome.api.kms_errors import kms_api_error
from multihome.api.responses import outage_wait
from multihome.api.responses.outage_wait import through_outage
from multihome.crypto.errors import KmsRefused, KmsUnavailable

pytestmark = pytest.mark.anyio
VAULT = "Vault Transit (http://127.0.0.1:1, mount transit)"


def failing(*errors: Exception):
    """A checkpoint raising `errors` in turn, then written (True); `.tries` counts its calls."""
    left = list(errors)

    async def checkpoint() -> bool:
        checkpoint.tries += 1  # type: ignore[attr-defined]
        if left:
            raise left.pop(0)
        return True

    checkpoint.tries = 0  # type: ignore[attr-defined]
    return checkpoint


@pytest.mark.parametrize(
    "error",
    [
        KmsUnavailable(VAULT, "decrypt: ConnectError"),
        KmsRefused(VAULT, "decrypt: HTTP 403: permission denied"),
        kms_api_error(KmsRefused(VAULT, "decrypt: HTTP 403")),  # as `stored` raises it
    ],
)
async def test_a_kms_that_cannot_seal_the_checkpoint_is_waited_for(error):
    checkpoint = failing(error, error)
    assert await through_outage("resp_1", checkpoint) is True
    assert checkpoint.tries == 3


async def test_a_kms_that_keeps_refusing_is_waited_for_only_so_long(monkeypatch):
    monkeypatch.setattr(outage_wait, "REFUSED_WAIT_S", 0.3)
    refused = KmsRefused(VAULT, "decrypt: HTTP 403: permission denied")
    checkpoint = failing(*[refused] * 1000)
    with pytest.raises(KmsRefused):
        await through_outage("resp_1", checkpoint)
    assert 1 < checkpoint.tries < 1000


async def test_any_other_error_raises_at_once():
    checkpoint = failing(ValueError("a bug"))
    with pytest.raises(ValueError):
        await through_outage("resp_1", checkpoint)
    assert checkpoint.tries == 1


async def test_a_long_wait_is_said_once_then_reminded_and_its_end_said(monkeypatch, caplog):
    unreachable = KmsUnavailable(VAULT, "decrypt: ConnectError")
    caplog.set_level(logging.INFO, logger=outage_wait.log.name)
    assert await through_outage("resp_1", failing(unreachable, unreachable, unreachable)) is True
    lines = [r for r in caplog.records if r.name == outage_wait.log.name]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO], [r.getMessage() for r in lines]
    assert "resp_1" in lines[0].getMessage() and "written" in lines[1].getMessage()
    caplog.clear()
    monkeypatch.setattr(outage_wait, "REMIND_S", 0.0)  # every try past the first is a reminder's time
    assert await through_outage("resp_2", failing(unreachable, unreachable, unreachable)) is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("still retrying" in w for w in warnings[1:]), warnings
