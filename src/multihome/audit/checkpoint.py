"""Signed checkpoints: `<chain>.checkpoints.jsonl`, one line per checkpoint.

A checkpoint says "chain C had `seq` events and its last hash was `head` at `time`", signed with
Ed25519 over the canonical JSON of {chain, final, format, head, key_id, seq, time}. `final` marks
the checkpoint of a clean shutdown: an event after it was appended by someone else. It is written only
after the events it covers are on disk, so a chain shorter than its last checkpoint was cut.
"""

from __future__ import annotations

import base64

import msgspec

from .events import FORMAT, canonical


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    chain: str
    seq: int
    head: str
    time: float
    key_id: str
    format: str = FORMAT
    final: bool = False  # written at a clean shutdown: nothing may follow it
    sig: str = ""  # base64 Ed25519 signature over `signed_bytes()`

    def signed_bytes(self) -> bytes:
        return canonical(
            {"chain": self.chain, "final": self.final, "format": self.format, "head": self.head,
             "key_id": self.key_id, "seq": self.seq, "time": self.time}
        )


def make_checkpoint(private, key_id: str, chain: str, seq: int, head: str, time: float, final: bool = False) -> bytes:
    unsigned = Checkpoint(chain=chain, seq=seq, head=head, time=time, key_id=key_id, final=final)
    sig = base64.b64encode(private.sign(unsigned.signed_bytes())).decode()
    return canonical(msgspec.structs.replace(unsigned, sig=sig)) + b"\n"


def parse_checkpoint(line: bytes) -> Checkpoint:
    return msgspec.json.decode(line, type=Checkpoint)
