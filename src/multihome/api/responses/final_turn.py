"""A background response's checkpoint (runner.py, agent_job.py): its final form, its last events and, for
a conversation's turn, its items appended, in one transaction.

The append is checked again as a foreground turn's is (turn_append.py): the turn's input must still fit
the conversation's bound, and a tool call or result must still pair with what is there. Refused, the
response is made `failed` with the error the check gives, its output shown but not appended to the
conversation; its upstream call was made and is billed, as a refused foreground turn's is."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...schema.errors import ApiError
from ...state.background import BackgroundStore, Event
from ...state.store import StoredResponse
from .stream import ResponsesStream, split_events
from .translate import Shell
from .turn_append import append_turn


def failed(shell: Shell, err: ApiError, answered: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response object of a response that failed with `err` (with the output and usage of the answer
    it had, `answered`, when its append was refused: billed, so shown)."""
    output, usage = (answered["output"], answered.get("usage")) if answered is not None else ([], None)
    error = {"code": err.body.code or "server_error", "message": err.body.message}
    return shell.render("failed", output, usage, error=error)


def closing(shell: Shell, seq: int | None, response: dict[str, Any], err: ApiError | None = None) -> list[Event]:
    """The terminal event (after an `error` event for `err`), numbered from `seq`; none when not streamed."""
    if seq is None:
        return []
    conv = ResponsesStream(shell, seq=seq)
    data = (
        conv.event("error", {"code": err.body.code, "message": err.body.message, "param": err.body.param})
        if err
        else b""
    )
    return split_events(data + conv.terminal(response), conv)


async def write_final(
    bg: BackgroundStore,
    final: StoredResponse,
    events: list[Event],
    shell: Shell,
    seq: int | None,
    end: int | None = None,
    err: ApiError | None = None,
) -> bool:
    """Make `final` final with `events` and its terminal event (numbered from `seq`; None: not streamed),
    after an `error` event for `err` (a failed run). `end`: the conversation's end as read when the turn's
    tool call or result was checked (the run's start). False when a cancel or delete got there first."""
    response, conversation = final.response, final.conversation_id
    if conversation is None or response["status"] == "failed":  # a failed turn is kept, not appended
        return await bg.finish(final, events + closing(shell, seq, response, err))
    new, kept = final.input, events + closing(shell, seq, response)
    append = [*new, *response["output"]]

    def write(at: int | None) -> Any:
        return bg.finish(final, kept, append, counted=len(new), expect_end=at)

    try:
        return bool(await append_turn(bg.store, final.tenant, conversation, new, end, write))
    except LookupError:  # the conversation was deleted meanwhile: the response is still kept
        return await bg.finish(final, kept)
    except ApiError as refusal:
        if refusal.status >= 500:  # the store could not be read (a 503): not the turn's fault, the job tries again
            raise
        refused = failed(shell, refusal, response)
        return await bg.finish(
            replace(final, status="failed", response=refused), events + closing(shell, seq, refused, refusal)
        )
