"""Signed checkpoints: `<chain>.checkpoints.jsonl`, one line per checkpoint.

A checkpoint says "chain C had `seq` events and its last hash was `head` at `time`", signed with
Ed25519 over the canonical JSON of {chain, final, format, head, key_id, seq, time}. `final` marks
the checkpoint of a clean shutdown: an event after it was appended by someone else. It is written only
after the events it covers are on disk, so a chain shorter than its last checkpoint was cut. The
first one (seq 0) signs the chain's genesis record as soon as the chain is opened.

The same struct, copied to the head registry (heads.py), is what makes a rollback of the files
visible; a trail without a signing key registers unsigned heads (`key_id` and `sig` empty).
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from .events import FORMAT, canonical
from .keys import verify as verify_sig


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
            {
                "chain": self.chain,
                "final": self.final,
                "format": self.format,
                "head": self.head,
                "key_id": self.key_id,
                "seq": self.seq,
                "time": self.time,
            }
        )

    @property
    def signed(self) -> bool:
        return bool(self.sig)


def new_checkpoint(
    private, key_id: str | None, chain: str, seq: int, head: str, time: float, final: bool = False
) -> Checkpoint:
    """Signed with `private`; without a key, an unsigned head (for the registry only, never a file)."""
    unsigned = Checkpoint(chain=chain, seq=seq, head=head, time=time, key_id=key_id or "", final=final)
    if private is None:
        return unsigned
    sig = base64.b64encode(private.sign(unsigned.signed_bytes())).decode()
    return msgspec.structs.replace(unsigned, sig=sig)


def encode_checkpoint(cp: Checkpoint) -> bytes:
    """The line of a checkpoint file (and the registry's copy, without the newline)."""
    return canonical(cp) + b"\n"


def make_checkpoint(private, key_id: str, chain: str, seq: int, head: str, time: float, final: bool = False) -> bytes:
    return encode_checkpoint(new_checkpoint(private, key_id, chain, seq, head, time, final))


def signature_problem(cp: Checkpoint, keys: dict) -> str | None:
    """Why `cp` is not validly signed by one of `keys` (key id -> Ed25519 public key); None if it is."""
    public = keys.get(cp.key_id)
    if public is None:
        return f"is signed by unknown key {cp.key_id!r} (known: {', '.join(sorted(keys))})"
    try:
        signature = base64.b64decode(cp.sig, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not verify_sig(public, signature, cp.signed_bytes()):
        return (
            "is not validly signed: the signature does not match its content (forged, or chain/seq/head/time "
            "altered after signing)"
        )
    return None


def parse_checkpoint(line: bytes) -> Checkpoint:
    return msgspec.json.decode(line, type=Checkpoint)
