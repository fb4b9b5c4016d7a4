"""LoRA pair helpers, heterogeneous-rank padding, and the LoRA-aware aggregators
(FFA-LoRA, FedEx-LoRA, FlexLoRA)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.fl.aggregation.lora import svd_factors
from vista.fl.aggregators import ClientUpdate, ExactLoRA, FedAvg, FFALoRA, FlexLoRA, residual_key
from vista.fl.lora_math import lora_pairs, pad_to_global, truncate_to_rank

State = dict[str, torch.Tensor]
MODS = [f"base_model.model.roberta.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
HEAD = "base_model.model.classifier.modules_to_save.default.dense.weight"
OUT, IN, R = 5, 7, 4


def a_key(m: str) -> str:
    return f"{m}.lora_A.default.weight"


def b_key(m: str) -> str:
    return f"{m}.lora_B.default.weight"


def _state(gen: torch.Generator, r: int = R, mods: list[str] = MODS) -> State:
    s: State = {}
    for m in mods:
        s[a_key(m)] = torch.randn(r, IN, generator=gen, dtype=torch.float64)
        s[b_key(m)] = torch.randn(OUT, r, generator=gen, dtype=torch.float64)
    s[HEAD] = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    return s


def _hetero(ranks: list[int], ns: list[int], seed: int = 0) -> tuple[State, list[ClientUpdate]]:
    gen = torch.Generator().manual_seed(seed)
    g = _state(gen)
    return g, [ClientUpdate(c, _state(gen, r), n, rank=r) for c, (r, n) in enumerate(zip(ranks, ns))]


def _weights(updates: list[ClientUpdate]) -> list[float]:
    total = sum(u.num_examples for u in updates)
    return [u.num_examples / total for u in updates]


def _weighted_product(updates: list[ClientUpdate], m: str) -> torch.Tensor:
    return sum(w * (u.state[b_key(m)] @ u.state[a_key(m)]) for w, u in zip(_weights(updates), updates))


# ---- lora_math --------------------------------------------------------------------------------------


def test_lora_pairs_finds_every_module_and_nothing_else() -> None:
    s = _state(torch.Generator().manual_seed(0))
    s[residual_key(MODS[0])] = torch.zeros(OUT, IN)
    s["base_model.model.roberta.pooler.dense.lora_A_extra"] = torch.zeros(1)
    assert lora_pairs(s) == {m: (a_key(m), b_key(m)) for m in MODS}
    assert list(lora_pairs(s)) == MODS  # key order
    other = {"m.lora_A.fr.weight": torch.zeros(2, 3), "m.lora_B.fr.weight": torch.zeros(3, 2)}
    assert lora_pairs(other) == {"m": ("m.lora_A.fr.weight", "m.lora_B.fr.weight")}
    assert lora_pairs({HEAD: torch.zeros(1)}) == {}


def test_lora_pairs_refuses_half_pairs() -> None:
    s = _state(torch.Generator().manual_seed(0))
    with pytest.raises(KeyError, match=f"LoRA factor '{a_key(MODS[1])}' has no matching '{b_key(MODS[1])}'"):
        lora_pairs({k: v for k, v in s.items() if k != b_key(MODS[1])})
    with pytest.raises(KeyError, match="without a matching lora_A"):
        lora_pairs({k: v for k, v in s.items() if k != a_key(MODS[2])})


def test_truncate_to_rank() -> None:
    s = _state(torch.Generator().manual_seed(1))
    t = truncate_to_rank(s, 2)
    assert set(t) == set(s)
    for m in MODS:
        assert t[a_key(m)].shape == (2, IN) and t[b_key(m)].shape == (OUT, 2)
        assert torch.equal(t[a_key(m)], s[a_key(m)][:2]) and torch.equal(t[b_key(m)], s[b_key(m)][:, :2])
        # copies, not views: saving one must not carry the whole global factor along
        assert t[a_key(m)].untyped_storage().nbytes() == 2 * IN * 8
        assert t[b_key(m)].is_contiguous() and t[b_key(m)].untyped_storage().nbytes() == OUT * 2 * 8
    assert t[HEAD] is s[HEAD]
    assert all(torch.equal(truncate_to_rank(s, R)[k], v) for k, v in s.items())
    with pytest.raises(ValueError, match=rf"asked for rank 5 but '{a_key(MODS[0])}' has shape \(4, 7\)"):
        truncate_to_rank(s, 5)
    # an upload without its frozen A (FFA-LoRA) is cut the same way
    only_b = truncate_to_rank({k: v for k, v in s.items() if "lora_A" not in k}, 3)
    assert set(only_b) == {b_key(m) for m in MODS} | {HEAD}
    assert all(torch.equal(only_b[b_key(m)], s[b_key(m)][:, :3]) for m in MODS)
    with pytest.raises(ValueError, match="positive int, got 0"):
        truncate_to_rank(s, 0)


def test_pad_to_global_zero_pads_and_keeps_the_product() -> None:
    gen = torch.Generator().manual_seed(2)
    g, small = _state(gen), _state(gen, r=2)
    small["not.in.global"] = torch.ones(1)
    p = pad_to_global(small, g)
    assert set(p) == set(g)  # extras dropped
    for m in MODS:
        assert p[a_key(m)].shape == (R, IN) and p[b_key(m)].shape == (OUT, R)
        assert torch.equal(p[a_key(m)][:2], small[a_key(m)]) and not p[a_key(m)][2:].any()
        assert torch.equal(p[b_key(m)][:, :2], small[b_key(m)]) and not p[b_key(m)][:, 2:].any()
        torch.testing.assert_close(p[b_key(m)] @ p[a_key(m)], small[b_key(m)] @ small[a_key(m)], rtol=0, atol=1e-14)
    assert p[HEAD] is small[HEAD]  # already the right shape: not copied


def test_pad_to_global_refuses_what_padding_cannot_fix() -> None:
    gen = torch.Generator().manual_seed(3)
    g = _state(gen)
    k = a_key(MODS[0])
    with pytest.raises(ValueError, match=rf"'{k}' has shape \(6, 7\) but the global one is \(4, 7\): "
                                         "a LoRA factor of a higher rank"):
        pad_to_global({k: torch.zeros(6, IN)}, g)
    with pytest.raises(ValueError, match=rf"'{k}' has shape \(2, 8\) but the global one is \(4, 7\): a different"):
        pad_to_global({k: torch.zeros(2, 8)}, g)
    with pytest.raises(ValueError, match=rf"'{HEAD}' has shape \(2, 4\) but the global one is \(3, 4\)"):
        pad_to_global({HEAD: torch.zeros(2, 4)}, g)


# ---- heterogeneous ranks through FedAvg -----------------------------------------------------------------


def test_fedavg_of_mixed_ranks_is_fedavg_of_the_padded_factors() -> None:
    g, updates = _hetero([1, 4, 2], [5, 3, 2])
    out, _ = FedAvg().aggregate(g, updates, [], None)
    padded = [dataclasses.replace(u, state=pad_to_global(u.state, g), rank=None) for u in updates]
    ref, _ = FedAvg().aggregate(g, padded, [], None)
    assert all(torch.equal(out[k], ref[k]) for k in g)
    m = MODS[3]  # weights .5, .3, .2 at ranks 1, 4, 2: only client 1 reaches row 2 of A
    assert out[a_key(m)][2, 0].item() == pytest.approx(0.3 * updates[1].state[a_key(m)][2, 0].item(), abs=1e-15)


def test_rank_must_match_what_was_uploaded() -> None:
    g, (u,) = _hetero([2], [1])
    with pytest.raises(ValueError, match=r"client 0 uploaded '.*lora_A.default.weight' with shape \(2, 7\) "
                                         r"\(global \(4, 7\)\) but its update says rank=None \(the global rank\)"):
        FedAvg().aggregate(g, [dataclasses.replace(u, rank=None)], [], None)
    with pytest.raises(ValueError, match="but its update says rank=3"):
        FedAvg().aggregate(g, [dataclasses.replace(u, rank=3)], [], None)


# ---- FFA-LoRA ---------------------------------------------------------------------------------------------


def test_ffa_lora_keeps_a_and_averages_b() -> None:
    assert FFALoRA().client_options() == {"frozen": ["lora_A"]}
    g, full = _hetero([4, 4, 2], [1, 2, 7], seed=4)
    updates = [dataclasses.replace(u, state={k: v for k, v in u.state.items() if "lora_A" not in k}) for u in full]
    out, state = FFALoRA().aggregate(g, updates, [], None)
    assert state is None
    w = _weights(updates)
    for m in MODS:
        assert torch.equal(out[a_key(m)], g[a_key(m)])  # A unchanged, bit for bit
        expected = sum(wi * pad_to_global(u.state, g)[b_key(m)] for wi, u in zip(w, updates))
        torch.testing.assert_close(out[b_key(m)], expected, rtol=0, atol=1e-14)
        # columns past rank 2 come from the two rank-4 clients only (client 2 is zero there)
        torch.testing.assert_close(out[b_key(m)][:, 2:], w[0] * updates[0].state[b_key(m)][:, 2:]
                                   + w[1] * updates[1].state[b_key(m)][:, 2:], rtol=0, atol=1e-14)
        # FFA-LoRA's point: with A shared, the average of B gives the exact average model
        torch.testing.assert_close(out[b_key(m)] @ out[a_key(m)],
                                   sum(wi * pad_to_global(u.state, g)[b_key(m)] @ g[a_key(m)]
                                       for wi, u in zip(w, updates)), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[HEAD], sum(wi * u.state[HEAD] for wi, u in zip(w, updates)), rtol=0, atol=1e-14)


def test_ffa_lora_refuses_an_uploaded_a() -> None:
    g, updates = _hetero([4, 4], [1, 1])
    with pytest.raises(ValueError, match="FFALoRA: client 0 uploaded .*must not train nor upload lora_A"):
        FFALoRA().aggregate(g, updates, [], None)


# ---- FedEx-LoRA ---------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(ranks=st.lists(st.integers(1, R), min_size=1, max_size=5), data=st.data())
def test_exact_lora_served_model_is_the_exact_average(ranks: list[int], data: st.DataObject) -> None:
    ns = data.draw(st.lists(st.integers(1, 500), min_size=len(ranks), max_size=len(ranks)))
    g, updates = _hetero(ranks, ns, seed=data.draw(st.integers(0, 2**16)))
    with_old = data.draw(st.booleans())
    if with_old:  # a residual left over from earlier rounds
        g[residual_key(MODS[0])] = torch.randn(OUT, IN, dtype=torch.float64)
    out, _ = ExactLoRA().aggregate(g, updates, [], None)
    for m in MODS:
        r_old = g.get(residual_key(m), torch.zeros(OUT, IN, dtype=torch.float64))
        increment = out[residual_key(m)] - r_old
        served = out[b_key(m)] @ out[a_key(m)] + increment
        torch.testing.assert_close(served, _weighted_product(updates, m), rtol=0, atol=1e-12)
    ref, _ = FedAvg().aggregate(g, updates, [], None)
    assert all(torch.equal(out[k], ref[k]) for k in g if not k.startswith("residual:"))  # A, B, head = FedAvg


def test_exact_lora_single_client_has_no_residual() -> None:
    g, updates = _hetero([3], [11], seed=7)
    out, _ = ExactLoRA().aggregate(g, updates, [], None)
    for m in MODS:
        assert out[residual_key(m)].shape == (OUT, IN) and out[residual_key(m)].dtype == torch.float64
        assert torch.equal(out[residual_key(m)], torch.zeros(OUT, IN, dtype=torch.float64))


def test_exact_lora_residual_accumulates_over_rounds() -> None:
    g0, r1 = _hetero([4, 4], [1, 3], seed=8)
    g1, _ = ExactLoRA().aggregate(g0, r1, [], None)
    _, r2 = _hetero([4, 2, 4], [2, 2, 1], seed=9)
    g2, _ = ExactLoRA().aggregate(g1, r2, [], None)
    for m in MODS:
        assert torch.count_nonzero(g1[residual_key(m)]) > 0
        total = g1[residual_key(m)] + (_weighted_product(r2, m) - g2[b_key(m)] @ g2[a_key(m)])
        torch.testing.assert_close(g2[residual_key(m)], total, rtol=0, atol=1e-12)


def test_exact_lora_float32_residual_uses_the_stored_factors() -> None:
    g, updates = _hetero([4, 4, 4], [1, 1, 1], seed=10)
    g32 = {k: v.float() for k, v in g.items()}
    up32 = [dataclasses.replace(u, state={k: v.float() for k, v in u.state.items()}) for u in updates]
    out, _ = ExactLoRA().aggregate(g32, up32, [], None)
    m = MODS[0]
    assert out[residual_key(m)].dtype == torch.float32
    served = out[b_key(m)].double() @ out[a_key(m)].double() + out[residual_key(m)].double()
    exact = sum(w * (u.state[b_key(m)].double() @ u.state[a_key(m)].double()) for w, u in zip(_weights(up32), up32))
    torch.testing.assert_close(served, exact, rtol=0, atol=1e-6)


def test_exact_lora_refuses_uploaded_residuals_and_bad_shapes() -> None:
    g, (u,) = _hetero([4], [1])
    bad = dataclasses.replace(u, state={**u.state, residual_key(MODS[0]): torch.zeros(OUT, IN)})
    with pytest.raises(ValueError, match="residuals are server state"):
        ExactLoRA().aggregate(g, [bad], [], None)
    with pytest.raises(ValueError, match=r"global 'residual:.*query' has shape \(7, 5\), the module's B @ A is \(5, 7\)"):
        ExactLoRA().aggregate({**g, residual_key(MODS[0]): torch.zeros(IN, OUT)}, [u], [], None)


# ---- FlexLoRA ---------------------------------------------------------------------------------------------


def test_flexlora_is_exact_when_the_sum_fits_the_global_rank() -> None:
    g, updates = _hetero([2, 2], [3, 1], seed=11)  # two rank-2 products: rank <= 4 = R
    out, state = FlexLoRA().aggregate(g, updates, [], None)
    assert state is None
    for m in MODS:
        assert out[a_key(m)].shape == (R, IN) and out[b_key(m)].shape == (OUT, R)
        torch.testing.assert_close(out[b_key(m)] @ out[a_key(m)], _weighted_product(updates, m), rtol=0, atol=1e-10)
    torch.testing.assert_close(out[HEAD], 0.75 * updates[0].state[HEAD] + 0.25 * updates[1].state[HEAD],
                               rtol=0, atol=1e-14)


def test_flexlora_single_full_rank_client_is_reproduced() -> None:
    g, updates = _hetero([R], [5], seed=12)
    out, _ = FlexLoRA().aggregate(g, updates, [], None)
    for m in MODS:
        torch.testing.assert_close(out[b_key(m)] @ out[a_key(m)], _weighted_product(updates, m), rtol=0, atol=1e-10)


def test_flexlora_truncated_ranks_match_the_padded_product_and_best_approximation() -> None:
    g, updates = _hetero([1, 3, 2, 4], [4, 1, 2, 3], seed=13)  # sum has rank min(10, 5) = 5 > R
    out, _ = FlexLoRA().aggregate(g, updates, [], None)
    padded = [pad_to_global(u.state, g) for u in updates]
    for m in MODS:
        w = _weighted_product(updates, m)
        w_padded = sum(wi * (p[b_key(m)] @ p[a_key(m)]) for wi, p in zip(_weights(updates), padded))
        torch.testing.assert_close(w, w_padded, rtol=0, atol=1e-12)
        s = torch.linalg.svdvals(w)
        approx = out[b_key(m)] @ out[a_key(m)]
        # Eckart-Young: the rank-R result leaves exactly the smallest singular value(s) out
        np.testing.assert_allclose(torch.linalg.svdvals(approx)[:R].numpy(), s[:R].numpy(), rtol=1e-10)
        assert torch.linalg.matrix_norm(w - approx).item() == pytest.approx(s[R:].square().sum().sqrt().item(),
                                                                            rel=1e-9)
        # truncating the result for a rank-2 client gives the best rank-2 approximation of W
        t = truncate_to_rank(out, 2)
        err2 = torch.linalg.matrix_norm(w - t[b_key(m)] @ t[a_key(m)]).item()
        assert err2 == pytest.approx(s[2:].square().sum().sqrt().item(), rel=1e-9)
        # balanced factors: B^T B == A A^T == diag(S_R)
        torch.testing.assert_close(out[b_key(m)].T @ out[b_key(m)], torch.diag(s[:R]), rtol=0, atol=1e-10)
        torch.testing.assert_close(out[a_key(m)] @ out[a_key(m)].T, torch.diag(s[:R]), rtol=0, atol=1e-10)


def test_svd_factors_without_forming_w_and_with_rank_above_the_matrix() -> None:
    gen = torch.Generator().manual_seed(14)
    b_cat, a_cat = torch.randn(9, 6, generator=gen, dtype=torch.float64), torch.randn(6, 8, generator=gen,
                                                                                      dtype=torch.float64)
    w = b_cat @ a_cat
    u, s, vh = torch.linalg.svd(w)
    b, a = svd_factors(b_cat, a_cat, 3)  # matches the dense truncated SVD
    torch.testing.assert_close(b @ a, (u[:, :3] * s[:3]) @ vh[:3], rtol=0, atol=1e-10)
    b, a = svd_factors(b_cat[:2], a_cat, 4)  # a 2 x 8 W has only two singular values
    assert b.shape == (2, 4) and a.shape == (4, 8)
    assert not b[:, 2:].any() and not a[2:].any()
    torch.testing.assert_close(b @ a, b_cat[:2] @ a_cat, rtol=0, atol=1e-10)
