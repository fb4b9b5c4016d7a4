"""What a driver records, declared once: which FLContext entries are metrics, tables, artifacts.

A driver writes its round into the FLContext (server entries, and per-client entries under
``client:<id>`` roles) and declares, by key and role, what of it is recorded:

* ``metrics``: server entries logged once per recorded round (``metrics.jsonl``, W&B history),
  in the declared order; an entry absent this round is left out;
* ``tables``: one row per role (e.g. every ``client:*`` role that has one of the table's
  columns): ``<table>.jsonl`` with a ``round`` column, and a ``wandb.Table``;
* ``artifacts``: server entries holding tensors, written as safetensors files when the run ends.

``ExpRecorder.snapshot(ctx, plan)`` reads exactly this; nothing else builds records by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vista.pipeline.context import SERVER

CLIENT_ROLE = "client:"


def client_role(client: Any) -> str:
    return f"{CLIENT_ROLE}{client}"


def role_id(role: str) -> Any:
    """``client:3`` -> 3 (an int where it is one)."""
    ident = role.split(":", 1)[1]
    return int(ident) if ident.lstrip("-").isdigit() else ident


@dataclass(frozen=True)
class Table:
    """One row per role starting with ``role`` that holds any of ``columns``: ``{id_column: id,
    **the columns it holds, in this order}``; rows in the order their first column was set."""

    name: str
    columns: tuple[str, ...]
    role: str = CLIENT_ROLE
    id_column: str = "client"

    def rows(self, ctx: Any) -> list[dict[str, Any]]:
        order: list[str] = []
        for role, key, _ in ctx.items():
            if role.startswith(self.role) and key in self.columns and role not in order:
                order.append(role)
        return [{self.id_column: role_id(role),
                 **{c: ctx.get(c, role=role) for c in self.columns if ctx.has(c, role=role)}} for role in order]


@dataclass(frozen=True)
class Artifact:
    """A server entry holding tensors, saved as ``file`` (safetensors) in the run directory
    when the run ends; an entry that is absent or None writes nothing."""

    key: str
    file: str


@dataclass(frozen=True)
class RecordPlan:
    metrics: tuple[str, ...]
    tables: tuple[Table, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    role: str = SERVER  # where the metrics and artifacts live

    def record(self, ctx: Any) -> dict[str, Any]:
        """This round's record: ``round``, the metrics present, the non-empty tables."""
        out: dict[str, Any] = {"round": ctx.round}
        out.update({k: ctx.get(k, role=self.role) for k in self.metrics if ctx.has(k, role=self.role)})
        for table in self.tables:
            rows = table.rows(ctx)
            if rows:
                out[table.name] = rows
        return out
