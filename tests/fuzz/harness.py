"""What every property test asserts: a parser or translator fed hostile input either succeeds or
raises the error type its caller turns into a clean answer, never anything else.

- Client input (request bodies): `ApiError` with a 4xx status (the client gets a 400 that says
  what to fix), whose message shows a long value of the client's by its start only.
- Upstream input (response bodies, stream bytes, error bodies): `ValueError` (msgspec's
  DecodeError is one), which routing turns into a `malformed_response` / `malformed_stream`
  attempt (fail over, or an error event), or the front door's own 502 `ApiError`.

known.py lists the findings another branch of issue 11 fixes, tolerated until it is merged.
"""

from __future__ import annotations

import asyncio
import os

from hypothesis import HealthCheck, settings

from multihome.schema.errors import ApiError

from . import known
from .strategies import LONG_RUN

# Bounded and reproducible in the normal suite; bench/fuzz_long.sh raises MH_FUZZ_EXAMPLES and
# sets MH_FUZZ_RANDOM=1 for a longer run that explores new inputs each time.
FUZZ = settings(
    max_examples=int(os.environ.get("MH_FUZZ_EXAMPLES", "100")),
    derandomize=os.environ.get("MH_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class Unexpected(AssertionError):
    pass


def client_stage(stage: str, fn, data: bytes, *args):
    """Run one client-input stage; returns its result, or None when it refused with a 4xx."""
    try:
        out = fn(*args)
        if asyncio.iscoroutine(out):
            out = asyncio.run(out)
        return out
    except ApiError as err:
        if not 400 <= err.status < 500:
            raise Unexpected(f"{stage}: {err.status} {err.body.message!r} for {data[:300]!r}") from err
        if LONG_RUN in err.body.message:
            raise Unexpected(f"{stage}: a long value repeated whole: {err.body.message[:300]!r}") from err
        return None
    except Exception as exc:
        if known.in_process(stage, exc, data):
            return None
        raise Unexpected(f"{stage}: {type(exc).__name__}: {exc} for {data[:300]!r}") from exc


def upstream_stage(stage: str, fn, data: bytes, *args, allowed: tuple = (ValueError,)):
    """Run one upstream-input stage; returns its result, or None when it refused with one of the
    `allowed` exceptions its caller handles (an ApiError among them must be the gateway's own
    5xx: the upstream broke, not the client). `allowed=()`: the stage must never raise."""
    try:
        return fn(*args)
    except Exception as exc:
        if isinstance(exc, ApiError) and ApiError in allowed:
            if exc.status < 500:
                raise Unexpected(
                    f"{stage}: a broken upstream answer blamed on the client ({exc.status}) for {data[:300]!r}"
                ) from exc
            return None
        if isinstance(exc, allowed) and not isinstance(exc, ApiError):
            return None
        raise Unexpected(f"{stage}: {type(exc).__name__}: {exc} for {data[:300]!r}") from exc
