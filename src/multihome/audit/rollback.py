"""Checks across chains: each chain must still reach what others vouch it had reached.

A chain cut back to an earlier checkpoint together with its checkpoint file, or deleted with it,
is consistent in itself. Two things outside it remember more: the genesis record of every later
chain in the directory (links.py: the earlier chains' durable ends when it opened) and the head
registry (heads.py: the newest checkpoint of every chain, in the database or a witness's copy).
A chain that no longer reaches a vouched seq with the vouched hash was *rolled_back* (or
*rewritten*); one whose file is gone was *deleted*. What neither vouches for (the newest chain's
end, without a registry) cannot be checked, and the report says which chains that leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoint import Checkpoint, signature_problem
from .verify import ChainState, Problem, Report

REGISTRY = "the head registry"


@dataclass(frozen=True)
class Vouch:
    seq: int
    head: str
    final: bool
    source: str  # for messages: "the head registry", "the genesis record of chn_…"
    by: str | None = None  # the linking chain: its link counts only if its own genesis record verifies
    checkpoint: Checkpoint | None = None  # a registry entry: the signed checkpoint the file must still hold


class Expectations:
    def __init__(
        self, records: dict[str, dict | None], heads: list | None, trail: str | None, keys: dict, report: Report
    ) -> None:
        self.report = report
        self.registry_given = heads is not None
        self.vouches: dict[str, list[Vouch]] = {}
        for name, record in records.items():  # unverified yet: a link counts once its chain verifies
            for link in (record or {}).get("body", {}).get("links") or ():
                try:
                    vouch = Vouch(
                        seq=int(link["seq"]),
                        head=str(link["head"]),
                        final=bool(link["final"]),
                        source=f"the genesis record of {name}",
                        by=name,
                    )
                    self.vouches.setdefault(str(link["chain"]), []).append(vouch)
                except (KeyError, TypeError, ValueError):
                    continue  # a broken record fails its own chain's walk
        if heads is not None:
            for head in self._select(heads, trail, records, keys):
                cp = head.checkpoint
                self.vouches.setdefault(cp.chain, []).append(
                    Vouch(seq=cp.seq, head=cp.head, final=cp.final, source=REGISTRY, checkpoint=cp)
                )

    def _select(self, heads: list, trail: str | None, records: dict, keys: dict) -> list:
        """The registry entries of this directory's trail(s), with valid signatures."""
        add = self.report.problems.append
        trails = {trail} if trail else set()
        trails |= {r["body"].get("trail") for r in records.values() if r and isinstance(r["body"].get("trail"), str)}
        if not trails:
            known = {h.trail for h in heads}
            if len(known) > 1:
                add(
                    Problem(
                        "-",
                        "trail",
                        "the directory does not say which trail it is (no chain has a genesis "
                        f"record) and the head registry holds several: pass --trail (one of {', '.join(sorted(known))})",
                    )
                )
            trails = known if len(known) == 1 else set()
        for bad in getattr(heads, "unreadable", ()):  # heads.Heads: rows of the registry that cannot be read
            if bad.trail in trails or not trails:
                add(Problem(bad.chain, "unreadable_head", bad.problem))
        selected = []
        for head in heads:
            if head.trail not in trails:
                continue
            cp = head.checkpoint
            signed_chain = ((records.get(cp.chain) or {}).get("body") or {}).get("key_id")
            if keys and (cp.signed or signed_chain):
                problem = signature_problem(cp, keys)
                if problem is not None:
                    add(
                        Problem(
                            cp.chain, "forged_head", f"the head registry's entry (seq {cp.seq}) {problem}", seq=cp.seq
                        )
                    )
                    continue
            selected.append(head)
        self.report.heads = len(selected)
        return selected

    def seqs(self, chain: str) -> set[int]:
        """The seqs of `chain` whose hash the checks below need (the walk keeps only those)."""
        return {v.seq for v in self.vouches.get(chain, ())}

    def check(self, states: dict[str, ChainState]) -> None:
        for chain in sorted(set(self.vouches) | set(states)):
            state = states.get(chain)
            vouches = [v for v in self.vouches.get(chain, ()) if self._counts(v, states)]
            if state is None or not state.exists:
                self._deleted(chain, state, vouches)
                continue
            for vouch in vouches:
                self._check(state, vouch)
        self._say_what_is_open(states)

    @staticmethod
    def _counts(vouch: Vouch, states: dict[str, ChainState]) -> bool:
        if vouch.by is None:
            return True
        by = states.get(vouch.by)
        return by is not None and by.genesis is not None

    def _deleted(self, chain: str, state: ChainState | None, vouches: list[Vouch]) -> None:
        said = []
        if state is not None and state.checkpoints:
            said.append(f"its checkpoint file (to seq {state.checkpoints[-1][1].seq})")
        said += [f"{v.source} (seq {v.seq}{', closed' if v.final else ''})" for v in vouches]
        if not said:
            return
        strongest = max([v.seq for v in vouches] + [cp.seq for _, cp in (state.checkpoints if state else [])])
        self.report.problems.append(
            Problem(
                chain,
                "deleted",
                f"the chain file is gone, but {' and '.join(said)} "
                f"{'expects' if len(said) == 1 else 'expect'} it: expected seq {strongest}, found nothing",
                seq=strongest,
            )
        )

    def _check(self, state: ChainState, vouch: Vouch) -> None:
        add = self.report.problems.append
        chain, seq = state.name, vouch.seq
        if state.broken_at is not None and seq >= state.broken_at:
            return  # the walk already failed before this point
        closed = " (closed by a final checkpoint)" if vouch.final else ""
        if state.last_seq < seq:
            add(
                Problem(
                    chain,
                    "rolled_back",
                    f"{vouch.source} expects seq {seq}{closed}, found seq {state.last_seq}: "
                    f"events {state.last_seq + 1}..{seq} were cut (with their checkpoints, if none said so)",
                    seq=seq,
                )
            )
            return
        if state.heads.get(seq) != vouch.head:
            add(
                Problem(
                    chain,
                    "rewritten",
                    f"{vouch.source} expects hash {vouch.head[:16]}… at seq {seq}, found "
                    f"{str(state.heads.get(seq))[:16]}…: events up to seq {seq} were rewritten",
                    seq=seq,
                )
            )
            return
        last = state.last_checkpoint
        if vouch.final and state.last_seq > seq and not (last and last.final and last.seq <= seq):
            add(
                Problem(
                    chain,
                    "inserted",
                    f"events after seq {seq}, where {vouch.source} saw the chain closed: "
                    "appended by someone other than the writer",
                    seq=seq + 1,
                )
            )
        if not state.signed:
            return
        cp = vouch.checkpoint
        if vouch.final and not state.has_checkpoint(seq, vouch.head, final=True):
            add(
                Problem(
                    chain,
                    "rolled_back",
                    f"{vouch.source} expects the final checkpoint at seq {seq}, found "
                    f"{_last(last)}: the final checkpoint was removed",
                    seq=seq,
                )
            )
        elif cp is not None and cp.signed and not state.has_checkpoint(seq, vouch.head):
            add(
                Problem(
                    chain,
                    "rolled_back",
                    f"{vouch.source} expects a checkpoint at seq {seq}, found {_last(last)}:"
                    " the checkpoint file was cut back",
                    seq=seq,
                )
            )

    def _say_what_is_open(self, states: dict[str, ChainState]) -> None:
        """Warnings naming the chains whose end nothing vouches for: their rollback would pass."""
        open_: list[tuple[str, int | None, int]] = []  # (chain, newest vouched seq, last seq)
        for name, state in sorted(states.items()):
            if not state.exists or state.broken_at is not None:
                continue
            vouched = [v.seq for v in self.vouches.get(name, ()) if self._counts(v, states)]
            if max(vouched, default=-1) < state.last_seq:
                open_.append((name, max(vouched, default=None), state.last_seq))
        add = self.report.problems.append
        if not self.registry_given:
            tips = ", ".join(name for name, _, _ in open_) or "none"
            add(
                Problem(
                    "-",
                    "no_head_registry",
                    "no head registry given (--heads FILE, --database URL, or a --config "
                    "with storage): a rollback of the newest chain cannot be detected. Cutting a chain that no "
                    "later chain links (here: " + tips + ") back to an earlier checkpoint together with its "
                    "checkpoint file, or deleting it with its checkpoint file, would pass",
                    severity="warning",
                )
            )
            return
        for name, newest, last in open_:
            upto = "not at all" if newest is None else f"only up to seq {newest}"
            add(
                Problem(
                    name,
                    "unregistered",
                    f"the head registry has this chain {upto} and no later chain links "
                    f"it further; it reaches seq {last}: a cut back to there would not be detected (the "
                    "registry lags a live writer by one checkpoint, or the database was unreachable)",
                    seq=last,
                    severity="warning",
                )
            )


def _last(cp: Checkpoint | None) -> str:
    if cp is None:
        return "no checkpoint"
    return f"its last checkpoint at seq {cp.seq}{' (final)' if cp.final else ''}"
