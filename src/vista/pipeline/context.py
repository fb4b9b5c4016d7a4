"""FLContext: the state of one federated round.

Every round starts from a refreshed context, so a value computed in round t cannot leak
into round t+1 by accident. Entries belong to a role (``"server"``, ``"client:3"``): a
client's results of the round live under its role, and the recorder turns roles into table
rows (``vista.recording.plan``). What must persist across rounds is marked with ``keep()``
(sticky until ``release()``); a driver whose cross-round state is an object of its own (the
FedPEFT recipe's ``RoundState``) keeps nothing here.
"""

from __future__ import annotations

from typing import Any, Iterator

SERVER = "server"


class FLContext:
    def __init__(self, round: int = 0) -> None:
        self.round = round
        self._entries: dict[tuple[str, str], Any] = {}
        self._kept_keys: set[tuple[str, str]] = set()

    # -- entries ---------------------------------------------------------------------
    def set(self, key: str, value: Any, *, role: str = SERVER) -> None:
        self._entries[(role, key)] = value

    def get(self, key: str, default: Any = None, *, role: str = SERVER) -> Any:
        return self._entries.get((role, key), default)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._entries[(SERVER, key)]
        except KeyError:
            raise KeyError(
                f"FLContext has no server entry {key!r} in round {self.round}; "
                f"present: {sorted(k for r, k in self._entries if r == SERVER)}"
            ) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __contains__(self, key: str) -> bool:
        return (SERVER, key) in self._entries

    def has(self, key: str, *, role: str = SERVER) -> bool:
        return (role, key) in self._entries

    def items(self, role: str | None = None) -> Iterator[tuple[str, str, Any]]:
        """(role, key, value) triples, optionally of one role."""
        for (r, k), v in self._entries.items():
            if role is None or r == role:
                yield r, k, v

    def roles(self) -> set[str]:
        return {r for r, _ in self._entries}

    # -- persistence across rounds ------------------------------------------------------
    def keep(self, *keys: str, role: str = SERVER) -> None:
        """Carry these entries across every later refresh (until ``release``)."""
        self._kept_keys.update((role, k) for k in keys)

    def release(self, *keys: str, role: str = SERVER) -> None:
        self._kept_keys.difference_update((role, k) for k in keys)

    def is_kept(self, key: str, *, role: str = SERVER) -> bool:
        return (role, key) in self._kept_keys

    def refresh(self, round: int | None = None) -> list[tuple[str, str]]:
        """Start the next round: drop every entry not kept. Returns what was dropped."""
        dropped = [rk for rk in self._entries if not self.is_kept(rk[1], role=rk[0])]
        for rk in dropped:
            del self._entries[rk]
        self.round = self.round + 1 if round is None else round
        return dropped

    def scalars(self, role: str = SERVER) -> dict[str, float | int]:
        """The numeric entries of a role, for recorders."""
        return {
            k: v
            for (r, k), v in self._entries.items()
            if r == role and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
