"""The retrospective: what we saw (violations) against what merchants felt (complaints).

A contract is a mismatch when its complaints reach MISMATCH_RATIO of its violations,
or when it has complaints and no violations: our own signals under-count what
merchants live through, so its owner is asked to look (an escalation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from payorch.domain.contracts import MISMATCH_RATIO, contract, is_mismatch


@dataclass(frozen=True, slots=True)
class RetrospectiveEntry:
    contract_id: str
    owner: str
    count: int
    external_reports: int
    mismatch: bool


@dataclass(frozen=True, slots=True)
class Escalation:
    contract_id: str
    owner: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retrospective:
    since: datetime
    until: datetime
    entries: tuple[RetrospectiveEntry, ...]
    escalations: tuple[Escalation, ...]

    def to_yaml(self) -> str:
        """The seed's shape: `violations:` with id, count, external_reports, mismatch."""
        lines = [
            "window:",
            f"  since: {_scalar(self.since.isoformat())}",
            f"  until: {_scalar(self.until.isoformat())}",
            f"mismatch_ratio: {MISMATCH_RATIO}",
        ]
        lines.append("violations:" if self.entries else "violations: []")
        for e in self.entries:
            lines += [
                f"  - id: {_scalar(e.contract_id)}",
                f"    count: {e.count}",
                f"    external_reports: {e.external_reports}",
                f"    mismatch: {'true' if e.mismatch else 'false'}",
            ]
        lines.append("escalations:" if self.escalations else "escalations: []")
        for x in self.escalations:
            lines += [
                f"  - id: {_scalar(x.contract_id)}",
                f"    owner: {_scalar(x.owner)}",
                f"    reason: {_scalar(x.reason)}",
            ]
        return "\n".join(lines) + "\n"


_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(text: str) -> str:
    """Plain when YAML reads it back as the same string, else double-quoted (JSON is YAML)."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _reason(count: int, reports: int) -> str:
    if count == 0:
        return f"{reports} merchant report(s) and no violation recorded: nothing inside saw it"
    return (
        f"{reports} merchant report(s) against {count} violation(s)"
        f" ({reports / count:.0%} >= {MISMATCH_RATIO:.0%}): internal signals under-count it"
    )


def build_retrospective(
    since: datetime,
    until: datetime,
    violations: Mapping[str, int],
    complaints: Mapping[str, int],
) -> Retrospective:
    """One entry per contract with violations or complaints, most violations first."""
    ids = {k for k, v in violations.items() if v > 0} | {k for k, v in complaints.items() if v > 0}
    entries = sorted(
        (
            RetrospectiveEntry(
                contract_id=cid,
                owner=contract(cid).owner,
                count=violations.get(cid, 0),
                external_reports=complaints.get(cid, 0),
                mismatch=is_mismatch(violations.get(cid, 0), complaints.get(cid, 0)),
            )
            for cid in ids
        ),
        key=lambda e: (-e.count, -e.external_reports, e.contract_id),
    )
    escalations = tuple(
        Escalation(e.contract_id, e.owner, _reason(e.count, e.external_reports))
        for e in entries
        if e.mismatch
    )
    return Retrospective(since, until, tuple(entries), escalations)
