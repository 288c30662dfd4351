"""Claude's signed thinking blocks inside a Responses `reasoning` item, sealed to the tenant, so a
Responses tool loop served by Claude can send them back (docs/translation/reasoning.md).

Claude requires the thinking block of the turn that called a tool back, unchanged, with the tool's
result. A Responses client keeps reasoning only as output items, and `encrypted_content` is the
item's field for "opaque state only the producer reads back": the gateway puts the blocks there and
reads them out when the item comes back (stored, or replayed by value by a stateless client).

The blocks are the organisation's data (the model's thinking) and a replay is a call made with
them, so the blob is sealed (AES-256-GCM) under the tenant's `responses` data key from the keyring,
bound to the tenant and to this use: another tenant's blob, an edited one, or one whose data key is
gone (shredded) does not open and is a 400 naming the item; a blob sealed under a key rotated out
still opens while that key is stored. Sealing uses the keyring's cached key (`Keyring.seal_now`):
no KMS round trip per call. Without a database there is no keyring: the blobs are then sealed
under a key of this process (they open until it restarts). Blobs of the unbound format
`mh-thinking-v1.` are refused when a client sends them, and read as reasoning without blocks when
they come from the store. Only the gateway reads them: a native OpenAI upstream is never sent one
(native.py).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...crypto import CiphertextMismatch, DataKeyNotFound, Keyring, MalformedCiphertext
from ...crypto.envelope import length_prefixed
from ...schema.bounded import Decoder
from ...schema.chat import ThinkingBlock
from ...schema.errors import ApiError, bad_request, echo

log = logging.getLogger("multihome.responses")
PREFIX = "mh-thinking-v2."
_V1 = "mh-thinking-v1."
_OURS = "mh-thinking-"
# Where a blob is bound in the keyring's associated data: (purpose, table, record id).
PURPOSE, PLACE, RECORD = "responses", "reasoning", "encrypted_content"
_LOCAL = b"MHL"  # a blob sealed under the process key (no database); the keyring's start b"MHE"
_LOCAL_AAD = b"multihome.thinking.v2"
_NONCE = 12
_blocks = Decoder(list[ThinkingBlock])
Blocks = list[dict[str, Any]]


def is_ours(encrypted: Any) -> bool:
    """An `encrypted_content` this gateway wrote (any version): never sent to a native upstream."""
    return isinstance(encrypted, str) and encrypted.startswith(_OURS)


class ThinkingKeys:
    """The gateway's sealing of thinking blobs: under the keyring, or (no database) a key of this process."""

    def __init__(self, keyring: Callable[[], Keyring] | None) -> None:
        self._keyring = keyring  # called at use: the keyring opens after the routes are built
        self._local = None if keyring is not None else AESGCM(AESGCM.generate_key(256))

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring() if self._keyring is not None else None

    def of(self, tenant: str) -> Thinking:
        return Thinking(self, tenant)


class Thinking:
    """One tenant's thinking blobs for one response: `open` (before the turn is translated) opens every
    blob its items carry, `blocks` then hands them to the translation; `carry` seals new blocks without
    awaiting (a stream's converter calls it), under the key `ready` made sure is cached."""

    __slots__ = ("keys", "tenant", "_opened")

    def __init__(self, keys: ThinkingKeys, tenant: str) -> None:
        self.keys = keys
        self.tenant = tenant
        self._opened: dict[str, Blocks] = {}  # blob -> its blocks: opened, or sealed by this turn

    async def ready(self) -> None:
        """Cache the tenant's data key for `carry` (a turn that may think calls this before it runs)."""
        if self.keys.keyring is not None:
            await self.keys.keyring.ready(self.tenant, PURPOSE)

    def carry(self, blocks: Blocks) -> str | None:
        """`encrypted_content` for these blocks; None when none of them could go back (unsigned
        reasoning), or when the tenant's key is not cached (the turn did not `ready` it: not expected)."""
        kept = [b for b in blocks if b.get("signature") or b.get("type") == "redacted_thinking"]
        if not kept:
            return None
        plain = msgspec.json.encode(kept)
        keyring = self.keys.keyring
        if keyring is not None:
            sealed = keyring.seal_now(self.tenant, PURPOSE, PLACE, RECORD, plain)
            if sealed is None:
                log.warning("thinking blocks of tenant %s not carried: its data key was not ready", self.tenant)
                return None
        else:
            assert self.keys._local is not None
            nonce = os.urandom(_NONCE)
            sealed = _LOCAL + nonce + self.keys._local.encrypt(nonce, plain, self._local_aad())
        blob = PREFIX + base64.urlsafe_b64encode(sealed).decode()
        self._opened[blob] = kept
        return blob

    def blocks(self, encrypted: Any) -> Blocks | None:
        """The blocks of a blob `open` opened (or `carry` made); None for anything else."""
        return self._opened.get(encrypted) if isinstance(encrypted, str) else None

    async def open(self, items: Sequence[dict[str, Any]], param: str | None) -> None:
        """Open the blobs of these items' reasoning items. `param`: the request field the items came in
        (`input`, `items`): a blob that does not open is a 400 naming `param[i].encrypted_content`.
        None: the items come from the store (the client's were checked when they came in); an unbound
        `mh-thinking-v1.` blob there is read as reasoning without blocks."""
        for i, item in enumerate(items):
            if item.get("type") != "reasoning":
                continue
            blob = item.get("encrypted_content")
            if not is_ours(blob) or blob in self._opened:
                continue
            assert isinstance(blob, str)
            where = f"{param}[{i}].encrypted_content" if param is not None else None
            if not blob.startswith(PREFIX):
                if param is None and blob.startswith(_V1):
                    continue
                raise _refused(item, where, _OLD if blob.startswith(_V1) else _NOT_OURS)
            try:
                self._opened[blob] = await self._open(blob)
            except (ValueError, msgspec.DecodeError, InvalidTag, MalformedCiphertext, CiphertextMismatch):
                raise _refused(item, where, _NOT_OURS) from None
            except DataKeyNotFound:
                raise _refused(item, where, _GONE) from None

    async def _open(self, blob: str) -> Blocks:
        raw = base64.urlsafe_b64decode(blob[len(PREFIX) :].encode())
        keyring = self.keys.keyring
        if keyring is not None:
            plain = await keyring.open(self.tenant, PURPOSE, PLACE, RECORD, raw)
        else:
            if not raw.startswith(_LOCAL) or self.keys._local is None:
                raise ValueError("not sealed under this process's key")
            start = len(_LOCAL)
            nonce = raw[start : start + _NONCE]
            plain = self.keys._local.decrypt(nonce, raw[start + _NONCE :], self._local_aad())
        blocks: list[ThinkingBlock] = _blocks.decode(plain)
        if not blocks or not all(map(_whole, blocks)):  # carry() seals none but whole blocks, never none at all
            raise ValueError("not whole thinking blocks")
        return [{k: v for k, v in msgspec.structs.asdict(b).items() if v is not None} for b in blocks]

    def _local_aad(self) -> bytes:
        return _LOCAL_AAD + length_prefixed(self.tenant)


_NOT_OURS = (
    "is not one this gateway wrote for your organisation (it was modified, or made for another organisation); "
    "send reasoning items back exactly as they were returned to you, or without encrypted_content."
)
_GONE = (
    "was sealed under a key this gateway does not have (deleted with its data, or another gateway's); send the "
    "reasoning item without encrypted_content."
)
_OLD = (
    "is in a format (mh-thinking-v1) this gateway no longer accepts; send the reasoning item without "
    "encrypted_content, or start the tool loop again."
)


def _refused(item: dict[str, Any], where: str | None, why: str) -> ApiError:
    return bad_request(f"reasoning item {echo(item.get('id'))}: encrypted_content {why}", param=where)


def _whole(block: ThinkingBlock) -> bool:
    if block.type == "thinking":
        return block.thinking is not None and bool(block.signature)
    return block.type == "redacted_thinking" and bool(block.data)
