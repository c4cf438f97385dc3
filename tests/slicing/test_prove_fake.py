"""The fake prover (protocol tests and the simulator only): deterministic, tamper-evident,
seeded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slicing.errors import ProofError
from slicing.fake_prover import FakeProver, FakeVerifier

BID = "b" * 64


@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=8), st.integers(0, 9))
def test_same_statement_same_proof_and_it_verifies(inputs: list[float], index: int) -> None:
    a = FakeProver(seed=1).prove_statement(BID, index, inputs, 2)
    b = FakeProver(seed=1).prove_statement(BID, index, inputs, 2)
    assert a.proof == b.proof
    verifier = FakeVerifier()
    assert verifier.verify(BID, index, a.proof)
    assert not verifier.verify(BID, index + 1, a.proof)
    assert not verifier.verify("c" * 64, index, a.proof)


def test_tampered_instances_fail() -> None:
    art = FakeProver().prove_statement(BID, 0, [1.0, 2.0], 1)
    doc = json.loads(art.proof)
    doc["instances"][0][0] = doc["instances"][0][1]
    assert not FakeVerifier().verify(BID, 0, json.dumps(doc).encode())
    assert not FakeVerifier().verify(BID, 0, b"\xff not json")


def test_seeded_failures_and_latency_replay() -> None:
    prover = FakeProver(seed=7, failure_rate=0.5, latency_s_min=1.0, latency_s_max=2.0)
    outcomes = []
    for k in range(40):
        try:
            art = prover.prove_statement(BID, k, [float(k)], 1)
            assert 1.0 <= art.figures["latency_s"] <= 2.0
            outcomes.append(True)
        except ProofError:
            outcomes.append(False)
    assert 5 < sum(outcomes) < 35
    again = []
    for k in range(40):
        try:
            FakeProver(seed=7, failure_rate=0.5).prove_statement(BID, k, [float(k)], 1)
            again.append(True)
        except ProofError:
            again.append(False)
    assert again == outcomes
    with pytest.raises(ProofError):
        FakeProver(failure_rate=1.0).prove_statement(BID, 0, [0.0], 1)
