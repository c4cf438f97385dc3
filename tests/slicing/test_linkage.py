"""linkage: quantisation, commitments and the chain rules, on synthetic instances (no EZKL)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slicing.errors import LinkageError
from slicing.linkage import (
    FIELD_MODULUS,
    LinkReason,
    SliceLayout,
    compute_commitment,
    compute_felt_hex,
    compute_felts,
    compute_quantised,
    split_instances,
    verify_chain,
)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(0, 16))
def test_quantised_rounds_half_away_from_zero(x: float, scale: int) -> None:
    q = compute_quantised(x, scale)
    scaled = x * (1 << scale)
    assert abs(q - scaled) <= 0.5
    if abs(scaled - math.trunc(scaled)) == 0.5:
        assert abs(q) > abs(scaled)
    assert compute_quantised(-x, scale) == -q


@given(st.integers(-(1 << 120), 1 << 120))
def test_felt_hex_is_32_bytes_little_endian_mod_p(v: int) -> None:
    h = compute_felt_hex(v)
    assert len(h) == 64
    assert int.from_bytes(bytes.fromhex(h), "little") == v % FIELD_MODULUS


def test_felts_match_ezkl_encoding_examples() -> None:
    # Measured with EZKL 23.0.5 at scale 7: 1.0859375 -> 139, -0.046875 -> p - 6.
    assert compute_felts([1.0859375], 7) == ["8b" + "00" * 31]
    assert compute_felts([-0.046875], 7) == [compute_felt_hex(FIELD_MODULUS - 6)]


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.lists(st.text(max_size=4), max_size=4)))
def test_commitment_is_order_independent(d: dict[str, list[str]]) -> None:
    assert compute_commitment(d) == compute_commitment(dict(reversed(list(d.items()))))


# A synthetic chain: x(2) -> slice 0 -> h(3) -> slice 1 -> y(1).
LAYOUTS = [SliceLayout(0, (("x", 2),), (("h", 3),)), SliceLayout(1, (("h", 3),), (("y", 1),))]
X, H, Y = compute_felts([0.5, -1], 7), compute_felts([1, 2, 3], 7), compute_felts([6], 7)


def _instances() -> dict[int, list[str]]:
    return {0: X + H, 1: H + Y}


def _check(
    instances: dict[int, list[str]], valid=lambda i, j: i == j, commitment=None, claimed=None
) -> None:
    verify_chain(
        LAYOUTS,
        instances,
        valid,
        ["x"],
        ["y"],
        compute_commitment({"x": X}) if commitment is None else commitment,
        {"y": Y} if claimed is None else claimed,
    )


def test_split_instances_by_element_counts() -> None:
    assert split_instances(LAYOUTS[0], X + H) == {"in:x": X, "out:h": H}


def test_honest_chain_links() -> None:
    _check(_instances())


def test_tampered_boundary_is_rejected() -> None:
    inst = _instances()
    inst[1] = compute_felts([1, 2, 4], 7) + Y  # slice 1 proven on another h
    with pytest.raises(LinkageError) as info:
        _check(inst)
    assert info.value.reason == LinkReason.TAMPERED_BOUNDARY.value


def test_wrong_job_input_is_rejected() -> None:
    with pytest.raises(LinkageError) as info:
        _check(_instances(), commitment=compute_commitment({"x": compute_felts([0.5, 1], 7)}))
    assert info.value.reason == LinkReason.WRONG_JOB_INPUT.value


def test_wrong_result_is_rejected() -> None:
    with pytest.raises(LinkageError) as info:
        _check(_instances(), claimed={"y": compute_felts([7], 7)})
    assert info.value.reason == LinkReason.WRONG_RESULT.value


def test_invalid_proof_is_rejected() -> None:
    with pytest.raises(LinkageError) as info:
        _check(_instances(), valid=lambda i, j: i == j and i != 1)
    assert info.value.reason == LinkReason.INVALID_PROOF.value


def test_swapped_proofs_are_named() -> None:
    inst = _instances()
    swapped = {0: inst[1], 1: inst[0]}  # different layouts: caught before verification
    with pytest.raises(LinkageError) as info:
        _check(swapped)
    assert info.value.reason == LinkReason.PROOF_SWAPPED.value
    # Same layout on both slices: the proof fails its own vk but verifies under the other one.
    same = [SliceLayout(0, (("x", 2),), (("h", 2),)), SliceLayout(1, (("h", 2),), (("y", 2),))]
    with pytest.raises(LinkageError) as info:
        verify_chain(same, {0: X + X, 1: X + X}, lambda i, j: (i, j) == (0, 1), ["x"], ["y"], None)
    assert info.value.reason == LinkReason.PROOF_SWAPPED.value


def test_missing_proof_breaks_the_chain() -> None:
    with pytest.raises(LinkageError) as info:
        _check({0: X + H})
    assert info.value.reason == LinkReason.MISSING_PROOF.value
