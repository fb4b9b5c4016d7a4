"""event_pipeline: a linked list of every step a run actually executed.

Tasks the user wrote (``client_train``, ``aggregate`` ...) and implicit steps nobody wrote
(``context_refresh``, ``broadcast``, ``record``, ``scheduler_start`` ...) are appended in
execution order, so a run can be replayed in the mind from its ``event_pipeline.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

TASK = "task"
IMPLICIT = "implicit"


@dataclass
class Step:
    index: int
    name: str
    kind: str  # TASK or IMPLICIT
    round: int
    started: float
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    next: "Step | None" = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "round": self.round,
            "started": round(self.started, 6),
            "seconds": round(self.seconds, 6),
            "info": self.info,
            "next": None if self.next is None else self.next.index,
        }


class EventPipeline:
    def __init__(self) -> None:
        self.head: Step | None = None
        self.tail: Step | None = None
        self._len = 0
        self._t0 = time.perf_counter()

    def clock(self) -> float:
        """Seconds since this pipeline began: what ``Step.started`` is measured in."""
        return time.perf_counter() - self._t0

    def append(
        self, name: str, kind: str, round: int, seconds: float = 0.0, started: float | None = None, **info: Any
    ) -> Step:
        """``started`` defaults to ``now - seconds`` (a step logged right after it ran)."""
        start = self.clock() - seconds if started is None else started
        step = Step(self._len, name, kind, round, start, seconds, info)
        if self.tail is None:
            self.head = step
        else:
            self.tail.next = step
        self.tail = step
        self._len += 1
        return step

    def __iter__(self) -> Iterator[Step]:
        node = self.head
        while node is not None:
            yield node
            node = node.next

    def __len__(self) -> int:
        return self._len

    def names(self, round: int | None = None) -> list[str]:
        return [s.name for s in self if round is None or s.round == round]

    def to_list(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"head": 0 if self.head else None, "steps": self.to_list()}, indent=1, default=str))
        return path

    @classmethod
    def restored(cls, steps: list[dict[str, Any]]) -> "EventPipeline":
        """A run's pipeline as saved (:meth:`to_list`), to continue: new steps follow the last
        one, and the clock goes on from where it ended."""
        out = cls()
        for s in steps:
            out.append(s["name"], s["kind"], s["round"], s["seconds"], s["started"], **s["info"])
        if out.tail is not None:
            out._t0 -= out.tail.started + out.tail.seconds
        return out

    def format(self) -> str:
        return " -> ".join(f"{s.name}@{s.round}" for s in self)
