"""`multihome audit verify`: check every chain and every checkpoint in an audit directory.

Per chain, in order: each line decodes, is in canonical form and matches its hash (else
*modified*); seq runs 0 (the genesis record), 1, 2, 3... (a jump is *deleted*, a repeat or step
back is *inserted* or *reordered*); each `prev` is the previous event's hash (else the previous
event was replaced). The first problem in a chain is reported and that chain's walk stops: after a
break nothing later can be trusted. Then every checkpoint: its signature (else *forged*), and that
the chain has the signed head at the signed seq (else *truncated* when the chain is shorter,
*rewritten* otherwise). Then what other chains' genesis records and the head registry say each
chain had reached (rollback.py): a chain that no longer reaches it was *rolled_back* or *deleted*.

A torn last line (no newline: the process died mid-write) was never acknowledged, because
producers are told "durable" only after their line and its newline were fsynced. It is a warning,
unless a signed checkpoint covers its seq, which proves it had been durable: then it is an error.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

import msgspec

from .chainfile import CHAIN_SUFFIX, CP_SUFFIX, genesis_record
from .checkpoint import Checkpoint, parse_checkpoint, signature_problem
from .events import GENESIS_KIND, ChainOpened, check_line, genesis

_WINDOW = 4096  # recent events remembered to name a duplicate or reordered event


@dataclass
class Problem:
    chain: str
    kind: str  # modified, deleted, inserted, reordered, unlinked, truncated, rolled_back, torn_tail, forged_checkpoint, ...
    message: str
    line: int | None = None
    seq: int | None = None
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.chain + CHAIN_SUFFIX if self.chain != "-" else "-"
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
    heads: int | None = None  # head registry entries checked; None: no registry was given
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@dataclass
class ChainState:
    """What the walk of one chain established, for the checks across chains."""

    name: str
    exists: bool
    checkpoints: list[tuple[int, Checkpoint]]
    genesis: ChainOpened | None = None  # verified genesis record; None: none (older chain) or broken
    last_seq: int = -1  # last event that verified; -1: none
    broken_at: int | None = None  # seq where the walk stopped on a problem
    heads: dict[int, str] = field(default_factory=dict)  # seq -> hash, for the seqs someone vouches for

    @property
    def signed(self) -> bool:
        return bool(self.checkpoints) or bool(self.genesis and self.genesis.key_id)

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints[-1][1] if self.checkpoints else None

    def has_checkpoint(self, seq: int, head: str, final: bool = False) -> bool:
        return any(cp.seq == seq and cp.head == head and (cp.final or not final) for _, cp in self.checkpoints)


def chains_in(directory: str) -> list[str]:
    names = set()
    for name in os.listdir(directory):
        if name.endswith(CP_SUFFIX):
            names.add(name[: -len(CP_SUFFIX)])
        elif name.endswith(CHAIN_SUFFIX):
            names.add(name[: -len(CHAIN_SUFFIX)])
    return sorted(names)


def verify_dir(
    directory: str, public_keys: dict | None = None, heads: list | None = None, trail: str | None = None
) -> Report:
    """public_keys: key id -> Ed25519PublicKey. Empty/None: signatures are not checked (a warning).
    heads: the head registry (heads.Head entries from the database or an export); None: there is
    none, and verify says what it therefore cannot detect. trail: which registry trail this
    directory is, when its own genesis records cannot say (every chain of it was deleted)."""
    from .rollback import Expectations

    report = Report()
    if not os.path.isdir(directory):
        report.problems.append(Problem("-", "missing", f"no audit directory at {directory}"))
        return report
    keys = public_keys or {}
    if not keys:
        report.problems.append(
            Problem("-", "unsigned", "no public key given: checkpoint signatures were not checked", severity="warning")
        )
    names = chains_in(directory)
    expected = Expectations({name: genesis_record(directory, name) for name in names}, heads, trail, keys, report)
    states = {}
    for chain in names:
        report.chains += 1
        states[chain] = _verify_chain(directory, chain, keys, report, expected.seqs(chain))
    expected.check(states)
    return report


def _verify_chain(directory: str, chain: str, keys: dict, report: Report, vouched: set[int]) -> ChainState:
    add = report.problems.append
    checkpoints, cp_lines = _load_checkpoints(directory, chain, keys, report)
    report.checkpoints += len(checkpoints)
    state = ChainState(chain, exists=False, checkpoints=checkpoints)
    path = os.path.join(directory, chain + CHAIN_SUFFIX)
    if not os.path.exists(path):
        return state  # rollback.py reports it, with everything that expected it
    state.exists = True
    wanted = {cp.seq for _, cp in checkpoints} | vouched | {0}
    last_seq, broken_at, torn = _walk(chain, path, wanted, state, report)
    state.last_seq, state.broken_at = last_seq, broken_at
    heads = state.heads
    key_id = state.genesis.key_id if state.genesis else None
    if cp_lines is None and key_id:
        add(
            Problem(
                chain,
                "deleted",
                f"the checkpoint file is missing but its genesis record says it is signed "
                f"with {key_id}: its checkpoints were deleted (expected one from seq 0, found none; the chain "
                f"reaches seq {last_seq})",
            )
        )
    elif cp_lines == 0 and key_id and last_seq >= 1:
        add(
            Problem(
                chain,
                "rolled_back",
                "the checkpoint file is empty but the writer signs seq 0 when it opens "
                f"a chain, and this one reaches seq {last_seq}: its checkpoints were removed",
                seq=0,
            )
        )
    elif not checkpoints and keys and state.genesis is None:
        # Written before genesis records: whether it was signed is not recorded anywhere.
        add(
            Problem(
                chain,
                "unsigned",
                "no signed checkpoint: a cut tail of this chain cannot be detected",
                severity="warning",
            )
        )
    elif state.genesis is not None and not key_id and keys:
        add(
            Problem(
                chain,
                "unsigned",
                "written without a signing key (its genesis record says so): only other "
                "chains' links and the head registry show a cut tail",
                severity="warning",
            )
        )
    # Checkpoints against the chain.
    beyond = [(n, cp) for n, cp in checkpoints if cp.seq > last_seq]
    if beyond and broken_at is None:
        line_no, cp = beyond[-1]
        add(
            Problem(
                chain,
                "truncated",
                f"checkpoint line {line_no} signs seq {cp.seq} but the chain ends at "
                f"seq {last_seq}: events {last_seq + 1}..{cp.seq} were cut from the tail",
                seq=last_seq + 1,
            )
        )
    for line_no, cp in checkpoints:
        if broken_at is not None and cp.seq >= broken_at:
            continue  # the chain already failed before this point
        if cp.seq > last_seq:
            continue
        elif heads.get(cp.seq) != cp.head:
            add(
                Problem(
                    chain,
                    "rewritten",
                    f"checkpoint line {line_no} signs head {cp.head[:16]}… at seq {cp.seq} "
                    f"but the chain has {str(heads.get(cp.seq))[:16]}… there: events up to seq {cp.seq} "
                    "were rewritten, or the checkpoint was altered",
                    seq=cp.seq,
                )
            )
    final = [cp for _, cp in checkpoints if cp.final]
    if final and broken_at is None and last_seq > final[-1].seq:
        add(
            Problem(
                chain,
                "inserted",
                f"events after the chain was closed at seq {final[-1].seq} (a final signed "
                "checkpoint): appended by someone other than the writer",
                seq=final[-1].seq + 1,
            )
        )
    elif checkpoints and broken_at is None and not final and last_seq > checkpoints[-1][1].seq:
        add(
            Problem(
                chain,
                "unsigned_tail",
                f"events {checkpoints[-1][1].seq + 1}..{last_seq} follow the last "
                "checkpoint (the writer stopped without a clean shutdown): hash-chained but not signed",
                severity="warning",
            )
        )
    if torn is not None:
        torn_line, torn_seq = torn
        covered = [cp.seq for _, cp in checkpoints if cp.seq >= torn_seq]
        if broken_at is None and not covered:
            add(
                Problem(
                    chain,
                    "torn_tail",
                    "the last line is incomplete (the writer died mid-write); it was never "
                    "acknowledged as durable, so nothing promised is lost",
                    line=torn_line,
                    seq=torn_seq,
                    severity="warning",
                )
            )
        elif broken_at is None:
            add(
                Problem(
                    chain,
                    "torn_tail",
                    f"the line for seq {torn_seq} is incomplete but a signed checkpoint "
                    f"covers seq {max(covered)}: a durable event was cut",
                    line=torn_line,
                    seq=torn_seq,
                )
            )
    return state


def _walk(chain: str, path: str, wanted: set, state: ChainState, report: Report):
    """-> (last good seq, seq where the chain broke or None, (line, seq) of a torn last line or None).

    Fills state.heads for the `wanted` seqs and state.genesis from a verified genesis record."""
    add = report.problems.append
    heads = state.heads
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    torn = None
    expected, prev = 0, genesis(chain)
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
        if index == 0 and seq == 1 and event["kind"] != GENESIS_KIND:
            expected = 1  # a chain written before genesis records: seq 1 links to the genesis value
        if seq != expected:
            disorder = _order_problem(chain, lines, index, seq, expected, event, recent)
            add(disorder)
            # A duplicated seq casts doubt on the first copy too: checkpoints from there on are moot.
            broken = min(expected, disorder.seq) if isinstance(disorder.seq, int) else expected
            return broken - 1, broken, None
        if event["prev"] != prev:
            if index == 0:
                message, broken = "the first event does not link to the chain's genesis value", seq
            else:
                message, broken = (
                    (
                        f"does not link to event {seq - 1} (line {line_no - 1}): that event was replaced "
                        "and re-hashed, or an event was removed and the rest renumbered"
                    ),
                    seq - 1,
                )
            add(Problem(chain, "unlinked", message, line=line_no, seq=seq))
            return (broken if index else seq - 1), broken, None
        if (seq == 0) != (event["kind"] == GENESIS_KIND):
            add(
                Problem(
                    chain,
                    "modified" if seq == 0 else "inserted",
                    "seq 0 is not a genesis record" if seq == 0 else "a genesis record after seq 0",
                    line=line_no,
                    seq=seq,
                )
            )
            return expected - 1, expected, None
        if seq == 0:
            try:
                state.genesis = msgspec.convert(event["body"], ChainOpened)
            except msgspec.ValidationError as exc:
                add(Problem(chain, "modified", f"the genesis record is not valid ({exc})", line=line_no, seq=0))
                return -1, 0, None
        else:
            report.events += 1
        if seq in wanted:
            heads[seq] = digest
        recent[seq] = (line_no, digest, event["prev"])
        if len(recent) > _WINDOW:
            recent.popitem(last=False)
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
            return Problem(
                chain,
                "reordered",
                f"expected seq {expected} here but found seq {seq}; seq {expected} appears later at line {later}",
                line=line_no,
                seq=seq,
            )
        missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
        return Problem(chain, "deleted", f"{missing} missing before this line", line=line_no, seq=seq)
    earlier = recent.get(seq)
    if earlier is not None and earlier[2] == event["prev"]:
        # Two events claim the same seq and predecessor: the genuine one is the one the chain continues from.
        nxt = _decode(lines, index + 1)
        inserted = earlier[0] if nxt is not None and nxt.get("prev") == event["hash"] else line_no
        return Problem(
            chain,
            "inserted",
            f"seq {seq} appears twice (lines {earlier[0]} and {line_no}) and the chain "
            f"continues from the other one: line {inserted} was inserted",
            line=inserted,
            seq=seq,
        )
    return Problem(
        chain,
        "reordered" if earlier is not None else "inserted",
        f"seq {seq} here goes back (expected seq {expected})",
        line=line_no,
        seq=seq,
    )


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


def _load_checkpoints(
    directory: str, chain: str, keys: dict, report: Report
) -> tuple[list[tuple[int, Checkpoint]], int | None]:
    """-> (the valid checkpoints with their line numbers, lines in the file or None when there is no file)."""
    add = report.problems.append
    path = os.path.join(directory, chain + CP_SUFFIX)
    if not os.path.exists(path):
        return [], None
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
            problem = signature_problem(cp, keys)
            if problem is not None:
                add(Problem(chain, "forged_checkpoint", f"{where} {problem}", seq=cp.seq))
                continue
        if cp.seq < last_seq:
            add(Problem(chain, "forged_checkpoint", f"{where} goes back from seq {last_seq} to {cp.seq}", seq=cp.seq))
            continue
        last_seq = cp.seq
        out.append((line_no, cp))
    if tail:
        add(
            Problem(
                chain,
                "torn_tail",
                f"checkpoint line {len(lines) + 1} is incomplete (crash mid-write)",
                severity="warning",
            )
        )
    return out, len(lines) + bool(tail)
