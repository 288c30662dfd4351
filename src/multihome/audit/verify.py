"""`multihome audit verify`: check every chain and every checkpoint in an audit directory.

Per chain, in order: each line decodes, is in canonical form and matches its hash (else
*modified*); seq runs 1, 2, 3... (a jump is *deleted*, a repeat or step back is *inserted* or
*reordered*); each `prev` is the previous event's hash (else the previous event was replaced).
The first problem in a chain is reported and that chain's walk stops: after a break nothing later
can be trusted. Then every checkpoint: its signature (else *forged*), and that the chain has the
signed head at the signed seq (else *truncated* when the chain is shorter, *rewritten* otherwise).

A torn last line (no newline: the process died mid-write) was never acknowledged, because
producers are told "durable" only after their line and its newline were fsynced. It is a warning,
unless a signed checkpoint covers its seq, which proves it had been durable: then it is an error.
"""

from __future__ import annotations

import base64
import binascii
import collections
import os
from dataclasses import dataclass, field

import msgspec

from .checkpoint import Checkpoint, parse_checkpoint
from .events import check_line, genesis
from .keys import verify as verify_sig

CP_SUFFIX = ".checkpoints.jsonl"
_WINDOW = 4096  # recent events remembered to name a duplicate or reordered event


@dataclass
class Problem:
    chain: str
    kind: str  # modified, deleted, inserted, reordered, unlinked, truncated, torn_tail, forged_checkpoint, ...
    message: str
    line: int | None = None
    seq: int | None = None
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.chain + ".jsonl"
        if self.line is not None:
            where += f" line {self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{'FAIL' if self.severity == 'error' else 'WARN'} {where}: {self.kind}: {self.message}"


@dataclass
class Report:
    chains: int = 0
    events: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def chains_in(directory: str) -> list[str]:
    names = set()
    for name in os.listdir(directory):
        if name.endswith(CP_SUFFIX):
            names.add(name[: -len(CP_SUFFIX)])
        elif name.endswith(".jsonl"):
            names.add(name[: -len(".jsonl")])
    return sorted(names)


def verify_dir(directory: str, public_keys: dict | None = None) -> Report:
    """public_keys: key id -> Ed25519PublicKey. Empty/None: signatures are not checked (a warning)."""
    report = Report()
    if not os.path.isdir(directory):
        report.problems.append(Problem("-", "missing", f"no audit directory at {directory}"))
        return report
    keys = public_keys or {}
    if not keys:
        report.problems.append(Problem("-", "unsigned", "no public key given: checkpoint signatures were not checked",
                                       severity="warning"))
    for chain in chains_in(directory):
        report.chains += 1
        _verify_chain(directory, chain, keys, report)
    return report


def _verify_chain(directory: str, chain: str, keys: dict, report: Report) -> None:
    add = report.problems.append
    checkpoints = _load_checkpoints(directory, chain, keys, report)
    report.checkpoints += len(checkpoints)
    path = os.path.join(directory, chain + ".jsonl")
    if not os.path.exists(path):
        if checkpoints:
            add(Problem(chain, "deleted", "the chain file is missing but its checkpoints exist"))
        return
    if not checkpoints and keys:
        add(Problem(chain, "unsigned", "no signed checkpoint: a cut tail of this chain cannot be detected",
                    severity="warning"))
    wanted = {cp.seq for _, cp in checkpoints}
    heads: dict[int, str] = {}
    last_seq, broken_at, torn = _walk(chain, path, wanted, heads, report)
    # Checkpoints against the chain.
    beyond = [(n, cp) for n, cp in checkpoints if cp.seq > last_seq]
    if beyond and broken_at is None:
        line_no, cp = beyond[-1]
        add(Problem(chain, "truncated", f"checkpoint line {line_no} signs seq {cp.seq} but the chain ends at "
                    f"seq {last_seq}: events {last_seq + 1}..{cp.seq} were cut from the tail", seq=last_seq + 1))
    for line_no, cp in checkpoints:
        if broken_at is not None and cp.seq >= broken_at:
            continue  # the chain already failed before this point
        if cp.seq > last_seq:
            continue
        elif cp.seq > 0 and heads.get(cp.seq) != cp.head:
            add(Problem(chain, "rewritten", f"checkpoint line {line_no} signs head {cp.head[:16]}… at seq {cp.seq} "
                        f"but the chain has {str(heads.get(cp.seq))[:16]}… there: events up to seq {cp.seq} "
                        "were rewritten, or the checkpoint was altered", seq=cp.seq))
    final = [cp for _, cp in checkpoints if cp.final]
    if final and broken_at is None and last_seq > final[-1].seq:
        add(Problem(chain, "inserted", f"events after the chain was closed at seq {final[-1].seq} (a final signed "
                    "checkpoint): appended by someone other than the writer", seq=final[-1].seq + 1))
    elif checkpoints and broken_at is None and not final and last_seq > checkpoints[-1][1].seq:
        add(Problem(chain, "unsigned_tail", f"events {checkpoints[-1][1].seq + 1}..{last_seq} follow the last "
                    "checkpoint (the writer stopped without a clean shutdown): hash-chained but not signed",
                    severity="warning"))
    if torn is not None:
        torn_line, torn_seq = torn
        covered = [cp.seq for _, cp in checkpoints if cp.seq >= torn_seq]
        if broken_at is None and not covered:
            add(Problem(chain, "torn_tail", "the last line is incomplete (the writer died mid-write); it was never "
                        "acknowledged as durable, so nothing promised is lost", line=torn_line, seq=torn_seq,
                        severity="warning"))
        elif broken_at is None:
            add(Problem(chain, "torn_tail", f"the line for seq {torn_seq} is incomplete but a signed checkpoint "
                        f"covers seq {max(covered)}: a durable event was cut", line=torn_line, seq=torn_seq))


def _walk(chain: str, path: str, wanted: set, heads: dict, report: Report):
    """-> (last good seq, seq where the chain broke or None, (line, seq) of a torn last line or None)."""
    add = report.problems.append
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    torn = None
    expected, prev = 1, genesis(chain)
    recent: collections.OrderedDict[int, tuple[int, str, str]] = collections.OrderedDict()  # seq -> (line, hash, prev)
    for index, raw in enumerate(lines):
        line_no = index + 1
        try:
            event, digest, problem = check_line(raw)
        except msgspec.DecodeError:
            add(Problem(chain, "modified", "not a valid JSON event", line=line_no, seq=expected))
            return expected - 1, expected, None
        seq = event.get("seq")
        if problem is not None:
            add(Problem(chain, "modified", problem, line=line_no, seq=seq if isinstance(seq, int) else None))
            return expected - 1, expected, None
        if event["chain"] != chain:
            add(Problem(chain, "inserted", f"the event belongs to chain {event['chain']}", line=line_no, seq=seq))
            return expected - 1, expected, None
        if seq != expected:
            problem = _order_problem(chain, lines, index, seq, expected, event, recent)
            add(problem)
            # A duplicated seq casts doubt on the first copy too: checkpoints from there on are moot.
            broken = min(expected, problem.seq) if isinstance(problem.seq, int) else expected
            return broken - 1, broken, None
        if event["prev"] != prev:
            if seq == 1:
                message = "the first event does not link to the chain's genesis value"
            else:
                message = (f"does not link to event {seq - 1} (line {line_no - 1}): that event was replaced "
                           "and re-hashed, or an event was removed and the rest renumbered")
            add(Problem(chain, "unlinked", message, line=line_no, seq=seq))
            return expected - 1, expected - 1 if seq > 1 else 1, None
        if seq in wanted:
            heads[seq] = digest
        recent[seq] = (line_no, digest, event["prev"])
        if len(recent) > _WINDOW:
            recent.popitem(last=False)
        report.events += 1
        expected, prev = seq + 1, digest
    if tail:
        torn = (len(lines) + 1, expected)
    return expected - 1, None, torn


def _order_problem(chain, lines, index, seq, expected, event, recent) -> Problem:
    line_no = index + 1
    if not isinstance(seq, int):
        return Problem(chain, "modified", "seq is not an integer", line=line_no)
    if seq > expected:
        later = _find_seq(lines, index + 1, expected)
        if later is not None:
            return Problem(chain, "reordered", f"expected seq {expected} here but found seq {seq}; seq {expected} "
                           f"appears later at line {later}", line=line_no, seq=seq)
        missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
        return Problem(chain, "deleted", f"{missing} missing before this line", line=line_no, seq=seq)
    earlier = recent.get(seq)
    if earlier is not None and earlier[2] == event["prev"]:
        # Two events claim the same seq and predecessor: the genuine one is the one the chain continues from.
        nxt = _decode(lines, index + 1)
        inserted = earlier[0] if nxt is not None and nxt.get("prev") == event["hash"] else line_no
        return Problem(chain, "inserted", f"seq {seq} appears twice (lines {earlier[0]} and {line_no}) and the chain "
                       f"continues from the other one: line {inserted} was inserted", line=inserted, seq=seq)
    return Problem(chain, "reordered" if earlier is not None else "inserted",
                   f"seq {seq} here goes back (expected seq {expected})", line=line_no, seq=seq)


def _find_seq(lines, start, seq) -> int | None:
    for j in range(start, min(len(lines), start + _WINDOW)):
        event = _decode(lines, j)
        if event is not None and event.get("seq") == seq:
            return j + 1
    return None


def _decode(lines, j):
    if j >= len(lines):
        return None
    try:
        event = msgspec.json.decode(lines[j])
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


def _load_checkpoints(directory: str, chain: str, keys: dict, report: Report) -> list[tuple[int, Checkpoint]]:
    add = report.problems.append
    path = os.path.join(directory, chain + CP_SUFFIX)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()
    out: list[tuple[int, Checkpoint]] = []
    last_seq = 0
    for index, raw in enumerate(lines):
        line_no = index + 1
        where = f"checkpoint line {line_no}"
        try:
            cp = parse_checkpoint(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            add(Problem(chain, "forged_checkpoint", f"{where} is not a valid checkpoint"))
            continue
        if cp.chain != chain:
            add(Problem(chain, "forged_checkpoint", f"{where} names chain {cp.chain}", seq=cp.seq))
            continue
        if keys:
            public = keys.get(cp.key_id)
            if public is None:
                add(Problem(chain, "forged_checkpoint", f"{where} is signed by unknown key {cp.key_id!r} "
                            f"(known: {', '.join(sorted(keys))})", seq=cp.seq))
                continue
            try:
                signature = base64.b64decode(cp.sig, validate=True)
            except (binascii.Error, ValueError):
                signature = b""
            if not verify_sig(public, signature, cp.signed_bytes()):
                add(Problem(chain, "forged_checkpoint", f"{where}: the signature does not match its content "
                            f"(forged, or chain/seq/head/time altered after signing)", seq=cp.seq))
                continue
        if cp.seq < last_seq:
            add(Problem(chain, "forged_checkpoint", f"{where} goes back from seq {last_seq} to {cp.seq}", seq=cp.seq))
            continue
        last_seq = cp.seq
        out.append((line_no, cp))
    if tail:
        add(Problem(chain, "torn_tail", f"checkpoint line {len(lines) + 1} is incomplete (crash mid-write)",
                    severity="warning"))
    return out
