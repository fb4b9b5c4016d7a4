"""FLContext: per-round state, sticky keep marks, role namespaces."""

from __future__ import annotations

import pytest

from vista.pipeline.context import SERVER, FLContext


def test_refresh_drops_unkept_entries_and_advances_round() -> None:
    ctx = FLContext(round=3)
    ctx["loss"] = 0.5
    ctx.set("update", [1, 2], role="client:1")
    dropped = ctx.refresh()
    assert ctx.round == 4
    assert sorted(dropped) == [("client:1", "update"), ("server", "loss")]
    assert "loss" not in ctx
    assert not ctx.has("update", role="client:1")
    assert list(ctx.items()) == []


def test_refresh_with_explicit_round_sets_it() -> None:
    ctx = FLContext()
    ctx.refresh(7)
    assert ctx.round == 7
    ctx.refresh()
    assert ctx.round == 8


def test_refresh_returns_only_what_it_dropped() -> None:
    ctx = FLContext()
    ctx["a"] = 1
    ctx["b"] = 2
    ctx["c"] = 3
    ctx.keep("b")
    assert sorted(ctx.refresh()) == [(SERVER, "a"), (SERVER, "c")]
    assert ctx.refresh() == []  # nothing left that is not kept
    assert ctx["b"] == 2


def test_keep_is_sticky_across_refreshes_until_release() -> None:
    ctx = FLContext()
    ctx["global_state"] = {"w": 1}
    ctx.keep("global_state")
    for r in range(1, 4):
        ctx.refresh(r)
        assert ctx["global_state"] == {"w": 1}
        assert ctx.is_kept("global_state")
    # a value overwritten in a later round is still kept (the mark is on the key)
    ctx["global_state"] = {"w": 2}
    ctx.refresh()
    assert ctx["global_state"] == {"w": 2}
    ctx.release("global_state")
    assert not ctx.is_kept("global_state")
    assert ctx.refresh() == [(SERVER, "global_state")]
    assert "global_state" not in ctx


def test_keep_before_the_entry_exists() -> None:
    ctx = FLContext()
    ctx.keep("best")
    ctx.refresh()
    ctx["best"] = 0.9
    ctx.refresh()
    assert ctx["best"] == 0.9


def test_keep_is_per_role() -> None:
    ctx = FLContext()
    ctx.set("state", "srv")
    ctx.set("state", "cli", role="client:1")
    ctx.keep("state", role="client:1")
    ctx.refresh()
    assert ctx.get("state", role="client:1") == "cli"
    assert "state" not in ctx
    assert ctx.is_kept("state", role="client:1")
    assert not ctx.is_kept("state")


def test_roles_are_separate_namespaces() -> None:
    ctx = FLContext()
    ctx.set("loss", 1.0, role="server")
    ctx.set("loss", 2.0, role="client:1")
    ctx.set("loss", 3.0, role="client:10")
    assert ctx["loss"] == 1.0
    assert ctx.get("loss") == 1.0
    assert ctx.get("loss", role="client:1") == 2.0
    assert ctx.get("loss", role="client:10") == 3.0
    assert ctx.get("loss", role="client:2") is None
    assert ctx.get("loss", "dflt", role="client:2") == "dflt"
    assert ctx.roles() == {"server", "client:1", "client:10"}
    assert sorted(ctx.items()) == [
        ("client:1", "loss", 2.0),
        ("client:10", "loss", 3.0),
        ("server", "loss", 1.0),
    ]
    assert list(ctx.items("client:1")) == [("client:1", "loss", 2.0)]
    # __contains__ / __getitem__ only see the server namespace
    ctx2 = FLContext()
    ctx2.set("only_client", 1, role="client:1")
    assert "only_client" not in ctx2
    with pytest.raises(KeyError):
        ctx2["only_client"]


def test_getitem_missing_key_names_the_key_round_and_present_keys() -> None:
    ctx = FLContext(round=5)
    ctx["present_b"] = 1
    ctx["present_a"] = 2
    ctx.set("client_only", 3, role="client:0")
    with pytest.raises(KeyError) as exc:
        ctx["missing_key"]
    msg = str(exc.value)
    assert "'missing_key'" in msg
    assert "round 5" in msg
    assert "['present_a', 'present_b']" in msg
    assert "client_only" not in msg


def test_setitem_writes_the_server_role() -> None:
    ctx = FLContext()
    ctx["k"] = "v"
    assert ctx.get("k", role=SERVER) == "v"
    assert list(ctx.items()) == [(SERVER, "k", "v")]


def test_scalars_returns_numeric_non_bool_entries_of_a_role() -> None:
    ctx = FLContext()
    ctx["acc"] = 0.75
    ctx["round_clients"] = 4
    ctx["flag"] = True
    ctx["name"] = "x"
    ctx["tensorish"] = [1.0]
    ctx["none"] = None
    ctx.set("loss", 0.1, role="client:1")
    assert ctx.scalars() == {"acc": 0.75, "round_clients": 4}
    assert ctx.scalars("client:1") == {"loss": 0.1}
    assert ctx.scalars("nobody") == {}
