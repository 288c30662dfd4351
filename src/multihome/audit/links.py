"""What a new chain's genesis record says about the chains before it.

A chain that is deleted, or cut back together with its checkpoint file, leaves a directory that
is consistent in itself. So when a writer opens a chain it records, for every earlier chain in the
directory that has moved on since some chain last linked it, the last durable event it sees there
(seq and hash, after fsyncing that file) and whether a final checkpoint closed it. `verify` then
requires each linked chain to still reach that seq with that hash. On one host that links each new
chain to the one (or, with several workers, the ones) before it; what no later chain links yet,
only the head registry (heads.py) protects.
"""

from __future__ import annotations

import logging
import os
import socket

from ..config.audit import AuditConfig
from .chainfile import CHAIN_SUFFIX, chain_names, decode, genesis_record, last_checkpoint, last_line
from .events import Link

log = logging.getLogger("multihome.audit")


def host_name() -> str:
    return socket.gethostname() or "host"


def trail_of(config: AuditConfig) -> str:
    """The name the head registry files this writer's chains under: stable across restarts, distinct
    per audit directory, so replicas sharing one database keep apart."""
    return config.trail or f"{host_name()}:{os.path.realpath(config.dir or '.')}"


def links_for_new_chain(directory: str, known: dict[str, tuple[int, str]] | None = None) -> tuple[Link, ...]:
    """Links for a chain about to be opened in `directory`.

    `known`: chains whose durable end this process knows better than the file does (its own chain
    after a failed write, whose tail holds lines that were never fsynced)."""
    known = known or {}
    names = chain_names(directory)
    linked: dict[str, tuple[int, bool]] = {}
    for name in names:
        record = genesis_record(directory, name)
        for link in (record or {}).get("body", {}).get("links") or ():
            if isinstance(link, dict) and isinstance(link.get("seq"), int) and isinstance(link.get("chain"), str):
                seen = (link["seq"], bool(link.get("final")))
                linked[link["chain"]] = max(linked.get(link["chain"], seen), seen)
    links = []
    for name in names:
        end = known.get(name) or _durable_end(directory, name)
        if end is None:
            continue
        seq, head = end
        cp = last_checkpoint(directory, name)
        final = name not in known and cp is not None and cp.final and cp.seq == seq
        if name in linked and linked[name] >= (seq, final):
            continue  # a later chain already vouches for all of it
        links.append(Link(chain=name, seq=seq, head=head, final=final))
    return tuple(links)


def _durable_end(directory: str, chain: str) -> tuple[int, str] | None:
    """(seq, hash) of the chain's last complete line, made durable: a live writer in another process
    may not have fsynced it yet, and a link must never name an event a power cut could undo. Read
    first, fsync after, so whatever was read is covered by the fsync."""
    path = os.path.join(directory, chain + CHAIN_SUFFIX)
    event = decode(last_line(path))
    if event is None or not isinstance(event.get("seq"), int) or not isinstance(event.get("hash"), str):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # gone, or its disk is failing: vouch for nothing we cannot prove durable
        log.warning("audit: cannot fsync chain %s to link it (%s); not linked", chain, exc)
        return None
    return event["seq"], event["hash"]
