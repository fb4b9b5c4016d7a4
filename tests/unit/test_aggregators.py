"""Server optimisers, FedProx/HetLoRA, the shared contract every aggregator keeps, and the
aggregator config files."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from vista.fl import aggregators as agg
from vista.fl.aggregators import Aggregator, ClientUpdate, FedAvg
from vista.fl.client import LocalOptions

State = dict[str, torch.Tensor]
CONF_DIR = Path(str(resources.files("vista.conf"))) / "aggregator"
PREFIX = "base_model.model.roberta.encoder.layer.0.attention.self.query"
A_KEY, B_KEY = f"{PREFIX}.lora_A.default.weight", f"{PREFIX}.lora_B.default.weight"
HEAD = "base_model.model.classifier.modules_to_save.default.out_proj.bias"


def _state(gen: torch.Generator, r: int = 4, dtype: torch.dtype = torch.float64) -> State:
    return {A_KEY: torch.randn(r, 6, generator=gen, dtype=torch.float64).to(dtype),
            B_KEY: torch.randn(5, r, generator=gen, dtype=torch.float64).to(dtype),
            HEAD: torch.randn(3, generator=gen, dtype=torch.float64).to(dtype)}


def _round(ns: list[int], seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[State, list[ClientUpdate]]:
    gen = torch.Generator().manual_seed(seed)
    global_state = _state(gen, dtype=dtype)
    return global_state, [ClientUpdate(c, _state(gen, dtype=dtype), n) for c, n in enumerate(ns)]


def _np_mean(updates: list[ClientUpdate], key: str) -> np.ndarray:
    w = np.array([u.num_examples for u in updates], dtype=np.float64)
    w /= w.sum()
    return sum(wi * u.state[key].double().numpy() for wi, u in zip(w, updates))


def _clone(s: State) -> State:
    return {k: v.clone() for k, v in s.items()}


def _uploads_for(a: Any, updates: list[ClientUpdate]) -> list[ClientUpdate]:
    """Leave out what the aggregator tells clients to freeze."""
    frozen = a.client_options().get("frozen", [])
    return [dataclasses.replace(u, state={k: v for k, v in u.state.items() if not any(f in k for f in frozen)})
            for u in updates]


ALL = [agg.FedAvg(), agg.HetLoRA(), agg.FedProx(mu=0.1), agg.FedLC(tau=0.5), agg.FedAvgM(), agg.FedAdam(),
       agg.FedYogi(), agg.FedAdagrad(), agg.FFALoRA(), agg.ExactLoRA(), agg.FlexLoRA()]


# ---- the contract every aggregator keeps ---------------------------------------------------------


@pytest.mark.parametrize("a", ALL, ids=lambda a: type(a).__name__)
def test_contract(a: Any) -> None:
    assert isinstance(a, Aggregator)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.anything = 1
    opts = a.client_options()
    assert isinstance(opts, dict)
    LocalOptions.from_payload(opts)  # every option is one the client understands
    global_state, updates = _round([3, 5, 2], dtype=torch.float32)
    updates = _uploads_for(a, updates)
    g_copy, u_copies = _clone(global_state), [_clone(u.state) for u in updates]
    state = a.init_state(global_state)
    s_copy = None if state is None else {k: _clone(v) for k, v in state.items()}
    out, new_state = a.aggregate(global_state, updates, ["client 7 timed out"], state)
    # inputs untouched
    assert all(torch.equal(global_state[k], v) for k, v in g_copy.items())
    assert all(torch.equal(u.state[k], c[k]) for u, c in zip(updates, u_copies) for k in c)
    if state is not None:
        assert all(torch.equal(state[b][k], v) for b, buf in s_copy.items() for k, v in buf.items())
    else:
        assert new_state is None
    # same keys, shapes and dtypes as the global state (plus FedEx-LoRA's residual)
    extra = {f"residual:{PREFIX}"} if isinstance(a, agg.ExactLoRA) else set()
    assert set(out) == set(global_state) | extra
    for k, ref in global_state.items():
        assert out[k].shape == ref.shape and out[k].dtype == ref.dtype
        assert torch.isfinite(out[k]).all()
    # and it actually moved: no aggregator leaves the trained head where it was
    assert not torch.equal(out[HEAD], global_state[HEAD])
    with pytest.raises(ValueError, match=f"{type(a).__name__} got no client updates this round \\(1 failed"):
        a.aggregate(global_state, [], ["client 7 timed out"], state)


@pytest.mark.parametrize("a", ALL, ids=lambda a: type(a).__name__)
def test_duplicate_clients_and_bad_counts_are_refused(a: Any) -> None:
    global_state, updates = _round([3, 5])
    u0, u1 = _uploads_for(a, updates)
    state = a.init_state(global_state)
    with pytest.raises(ValueError, match=r"more than one update from client\(s\) \[0\]"):
        a.aggregate(global_state, [u0, dataclasses.replace(u1, client=0)], [], state)
    with pytest.raises(ValueError, match="client 1 reported num_examples=-1"):
        a.aggregate(global_state, [u0, dataclasses.replace(u1, num_examples=-1)], [], state)


# ---- FedAvg: what a missing key means ---------------------------------------------------------------


def test_missing_key_counts_as_the_global_value() -> None:
    g = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64), "b": torch.tensor([10.0], dtype=torch.float64)}
    u0 = ClientUpdate(0, {"w": torch.tensor([3.0, 4.0], dtype=torch.float64), "b": torch.tensor([20.0])}, 1)
    u1 = ClientUpdate(1, {"w": torch.tensor([5.0, 6.0], dtype=torch.float64)}, 3)  # did not upload b
    out, _ = FedAvg().aggregate(g, [u0, u1], [], None)
    torch.testing.assert_close(out["w"], torch.tensor([4.5, 5.5], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(out["b"], torch.tensor([0.25 * 20 + 0.75 * 10], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_key_nobody_uploaded_is_the_global_value_bit_for_bit() -> None:
    g = {"w": torch.randn(7, dtype=torch.float32), "frozen": torch.randn(5, dtype=torch.bfloat16)}
    updates = [ClientUpdate(c, {"w": torch.randn(7)}, n) for c, n in enumerate([1, 3, 6])]  # 0.1+0.3+0.6 != 1.0
    out, _ = FedAvg().aggregate(g, updates, [], None)
    assert torch.equal(out["frozen"], g["frozen"]) and out["frozen"].data_ptr() != g["frozen"].data_ptr()


@settings(max_examples=25, deadline=None)
@given(ns=st.lists(st.integers(0, 1000), min_size=1, max_size=6).filter(lambda ns: sum(ns) > 0),
       k=st.integers(2, 50), seed=st.integers(0, 2**16))
def test_fedavg_properties(ns: list[int], k: int, seed: int) -> None:
    """Convex combination (within the clients' range), and scaling every count by k changes nothing."""
    global_state, updates = _round(ns, seed)
    out, _ = FedAvg().aggregate(global_state, updates, [], None)
    scaled, _ = FedAvg().aggregate(global_state, [dataclasses.replace(u, num_examples=u.num_examples * k)
                                                  for u in updates], [], None)
    live = [u for u in updates if u.num_examples > 0]
    for key in global_state:
        assert torch.equal(out[key], scaled[key])
        stack = torch.stack([u.state[key] for u in live])
        assert (out[key] >= stack.min(0).values - 1e-12).all() and (out[key] <= stack.max(0).values + 1e-12).all()
        np.testing.assert_allclose(out[key].numpy(), _np_mean(updates, key), rtol=1e-12, atol=1e-12)


# ---- FedProx / HetLoRA ----------------------------------------------------------------------------


def test_fedprox_sends_mu_and_mu_zero_is_fedavg_exactly() -> None:
    assert agg.FedProx(mu=0.25).client_options() == {"prox_mu": 0.25}
    assert agg.FedProx(mu=0).client_options() == {"prox_mu": 0.0}
    assert FedAvg().client_options() == {}
    global_state, updates = _round([4, 9, 1], seed=5, dtype=torch.float32)
    ref, _ = FedAvg().aggregate(global_state, updates, [], None)
    for mu in (0.0, 0.5):  # mu never changes the server step
        out, state = agg.FedProx(mu=mu).aggregate(global_state, updates, [], None)
        assert state is None and all(torch.equal(out[k], ref[k]) for k in ref)


def test_fedlc_sends_tau_and_averages_as_fedavg() -> None:
    assert agg.FedLC(tau=0.5).client_options() == {"lc_tau": 0.5}
    global_state, updates = _round([4, 9, 1], seed=5, dtype=torch.float32)
    ref, _ = FedAvg().aggregate(global_state, updates, [], None)
    out, state = agg.FedLC().aggregate(global_state, updates, [], None)
    assert state is None and all(torch.equal(out[k], ref[k]) for k in ref)


def test_hetlora_is_fedavg() -> None:
    global_state, updates = _round([2, 7], seed=2, dtype=torch.bfloat16)
    ref, _ = FedAvg().aggregate(global_state, updates, [], None)
    out, _ = agg.HetLoRA().aggregate(global_state, updates, [], None)
    assert isinstance(agg.HetLoRA(), FedAvg) and agg.HetLoRA().client_options() == {}
    assert all(torch.equal(out[k], ref[k]) for k in ref)


# ---- FedAvgM -------------------------------------------------------------------------------------


def test_fedavgm_without_momentum_and_unit_lr_is_fedavg() -> None:
    global_state, updates = _round([4, 9, 1], seed=1)
    ref, _ = FedAvg().aggregate(global_state, updates, [], None)
    a = agg.FedAvgM(server_lr=1.0, momentum=0.0)
    out, _ = a.aggregate(global_state, updates, [], a.init_state(global_state))
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=1e-14)
    # float32 globals: the float64 round-off vanishes in the cast
    global32, updates32 = _round([4, 9, 1], seed=1, dtype=torch.float32)
    ref32, _ = FedAvg().aggregate(global32, updates32, [], None)
    out32, _ = a.aggregate(global32, updates32, [], None)
    assert all(torch.equal(out32[k], ref32[k]) for k in ref32)


def test_fedavgm_two_rounds_by_hand() -> None:
    lr, beta = 0.7, 0.9
    g0 = {"w": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    a = agg.FedAvgM(server_lr=lr, momentum=beta)
    r1 = [ClientUpdate(0, {"w": torch.tensor([2.0, -1.0], dtype=torch.float64)}, 1),
          ClientUpdate(1, {"w": torch.tensor([4.0, 1.0], dtype=torch.float64)}, 1)]  # avg (3, 0): delta (2, 1)
    g1, s1 = a.aggregate(g0, r1, [], a.init_state(g0))
    np.testing.assert_allclose(s1["velocity"]["w"].numpy(), [2.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(g1["w"].numpy(), [1 + lr * 2, -1 + lr * 1], atol=1e-15)
    r2 = [ClientUpdate(3, {"w": g1["w"] + torch.tensor([-1.0, 0.5], dtype=torch.float64)}, 5)]  # delta (-1, .5)
    g2, s2 = a.aggregate(g1, r2, [], s1)
    v2 = np.array([beta * 2 - 1, beta * 1 + 0.5])
    np.testing.assert_allclose(s2["velocity"]["w"].numpy(), v2, atol=1e-14)
    np.testing.assert_allclose(g2["w"].numpy(), g1["w"].numpy() + lr * v2, atol=1e-14)
    np.testing.assert_allclose(s1["velocity"]["w"].numpy(), [2.0, 1.0], atol=1e-15)  # old state untouched


# ---- adaptive optimisers (Reddi et al. 2021, Alg. 2) ------------------------------------------------


def _reddi(kind: str, deltas: list[np.ndarray], x0: np.ndarray, lr: float, b1: float, b2: float,
           tau: float) -> list[np.ndarray]:
    """An independent numpy transcription of Algorithm 2, one delta per round."""
    m, v, x, xs = np.zeros_like(x0), np.full_like(x0, tau**2), x0.copy(), []
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if kind == "adagrad":
            v = v + d**2
        elif kind == "adam":
            v = b2 * v + (1 - b2) * d**2
        else:
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        x = x + lr * m / (np.sqrt(v) + tau)
        xs.append(x)
    return xs


@pytest.mark.parametrize("kind", ["adam", "yogi", "adagrad"])
def test_adaptive_matches_algorithm_2_over_three_rounds(kind: str) -> None:
    lr, b1, b2, tau = 0.03, 0.8, 0.95, 1e-3
    cls = {"adam": agg.FedAdam, "yogi": agg.FedYogi, "adagrad": agg.FedAdagrad}[kind]
    a = cls(server_lr=lr, beta1=b1, tau=tau, **({} if kind == "adagrad" else {"beta2": b2}))
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=6)
    g = {"w": torch.from_numpy(x0.copy())}
    state, deltas = a.init_state(g), []
    np.testing.assert_array_equal(state["v"]["w"].numpy(), np.full(6, tau**2))
    for rnd in range(3):
        clients = [rng.normal(size=6) * 10.0 ** (-rnd) for _ in range(3)]  # shrinking steps cross tau
        ns = [2, 3, 5]
        deltas.append(sum(n / 10 * c for n, c in zip(ns, clients)))
        updates = [ClientUpdate(i, {"w": g["w"] + torch.from_numpy(c)}, n) for i, (c, n) in enumerate(zip(clients, ns))]
        g, state = a.aggregate(g, updates, [], state)
        np.testing.assert_allclose(g["w"].numpy(), _reddi(kind, deltas, x0, lr, b1, b2, tau)[-1], rtol=1e-10,
                                   atol=1e-12)


def test_fedadam_unit_lr_no_betas_is_a_sign_like_step() -> None:
    """Documented: server_lr=1, beta1=beta2=0 -> m=delta, v=delta^2, step = delta/(|delta|+tau)."""
    tau = 1e-3
    a = agg.FedAdam(server_lr=1.0, beta1=0.0, beta2=0.0, tau=tau)
    delta = torch.tensor([3.0, -0.5, 1e-2, -1e-3, 1e-6, 0.0], dtype=torch.float64)
    g = {"w": torch.zeros(6, dtype=torch.float64)}  # so global + delta is delta exactly
    out, state = a.aggregate(g, [ClientUpdate(0, {"w": g["w"] + delta}, 4)], [], a.init_state(g))
    step = (out["w"] - g["w"]).numpy()
    d = delta.numpy()
    np.testing.assert_allclose(state["m"]["w"].numpy(), d, atol=1e-15)
    np.testing.assert_allclose(state["v"]["w"].numpy(), d**2, atol=1e-15)
    np.testing.assert_allclose(step, d / (np.abs(d) + tau), rtol=1e-12, atol=1e-14)
    # ~sign(delta) where |delta| >> tau: within tau/|delta| of +-1
    assert abs(step[0] - 1) < 1e-3 / 3 + 1e-12 and abs(step[1] + 1) < 1e-3 / 0.5 + 1e-12
    assert abs(step[3] + 0.5) < 1e-12  # |delta| == tau: half a unit
    assert abs(step[4] - 1e-6 / (1e-6 + tau)) < 1e-15 and step[5] == 0.0  # ~delta/tau when tiny


def test_fedadagrad_and_fedyogi_first_unit_step() -> None:
    tau = 1e-3
    d = np.array([2.0, -0.1, 5e-3])
    g = {"w": torch.zeros(3, dtype=torch.float64)}
    u = [ClientUpdate(0, {"w": torch.from_numpy(d.copy())}, 1)]
    expected = d / (np.sqrt(tau**2 + d**2) + tau)  # |delta| > tau everywhere
    for a in (agg.FedAdagrad(server_lr=1.0, beta1=0.0, tau=tau), agg.FedYogi(server_lr=1.0, beta1=0.0, beta2=0.0,
                                                                              tau=tau)):
        out, _ = a.aggregate(g, u, [], None)  # None state == init_state
        np.testing.assert_allclose(out["w"].numpy(), expected, rtol=1e-12)


def test_stale_server_state_is_refused() -> None:
    g = {"w": torch.zeros(3, dtype=torch.float64)}
    a = agg.FedAdam()
    state = a.init_state({"w": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"FedAdam: m state 'w' has shape \(4,\), the global tensor \(3,\)"):
        a.aggregate(g, [ClientUpdate(0, {"w": torch.ones(3)}, 1)], [], state)
    with pytest.raises(ValueError, match="velocity state does not match the global state: missing"):
        agg.FedAvgM().aggregate({"x": torch.zeros(1)}, [ClientUpdate(0, {"x": torch.ones(1)}, 1)], [],
                                agg.FedAvgM().init_state(g))


@pytest.mark.parametrize("make, match", [
    (lambda: agg.FedProx(mu=-0.1), r"FedProx.mu=-0.1 is outside \[0.0, inf\)"),
    (lambda: agg.FedLC(tau=-1.0), r"FedLC.tau=-1.0 is outside \[0.0, inf\)"),
    (lambda: agg.FedAvgM(momentum=1.0), r"FedAvgM.momentum=1.0 is outside \[0.0, 1.0\)"),
    (lambda: agg.FedAvgM(server_lr=0.0), r"FedAvgM.server_lr=0.0 is outside \(0.0, inf\)"),
    (lambda: agg.FedAdam(beta2=1.5), r"FedAdam.beta2=1.5 is outside"),
    (lambda: agg.FedYogi(tau=0), r"FedYogi.tau=0 is outside"),
    (lambda: agg.FedAdagrad(beta1=-0.1), r"FedAdagrad.beta1=-0.1 is outside"),
])
def test_bad_hyperparameters_fail_at_construction(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
    with pytest.raises(TypeError, match="FedAdam.tau must be a number, got '1e-3'"):
        agg.FedAdam(tau="1e-3")


# ---- config files ------------------------------------------------------------------------------------


EXPECTED = {
    "fedavg": (agg.FedAvg, {}), "hetlora": (agg.HetLoRA, {}), "fedprox": (agg.FedProx, {"mu": 0.01}),
    "fedlc": (agg.FedLC, {"tau": 1.0}),
    "fedavgm": (agg.FedAvgM, {"server_lr": 1.0, "momentum": 0.9}),
    "fedadam": (agg.FedAdam, {"server_lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
    "fedyogi": (agg.FedYogi, {"server_lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
    "fedadagrad": (agg.FedAdagrad, {"server_lr": 1e-2, "beta1": 0.9, "tau": 1e-3}),
    "ffa_lora": (agg.FFALoRA, {}), "exact_lora": (agg.ExactLoRA, {}), "flexlora": (agg.FlexLoRA, {}),
}


def test_every_aggregator_config_is_listed() -> None:
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_aggregator_config_instantiates(name: str) -> None:
    cls, values = EXPECTED[name]
    obj = instantiate(OmegaConf.load(CONF_DIR / f"{name}.yaml"))
    assert type(obj) is cls
    assert {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} == values
    assert all(isinstance(v, float) for v in values.values())  # YAML gave floats, not strings
    assert OmegaConf.load(CONF_DIR / f"{name}.yaml")._target_.startswith("vista.fl.aggregators.")
