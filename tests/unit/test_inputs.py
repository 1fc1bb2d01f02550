"""Pinning a job's inputs at submit: the helper the API calls with the upload records it found."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from pijobs.shared import errors
from pijobs.shared.functions import BusinessFunction, FunctionRegistryError, check_function
from pijobs.shared.inputs import (
    Inputs,
    PinnedInput,
    UploadRecord,
    UploadStatus,
    is_owned_key,
    pin_inputs,
    upload_key,
)
from pijobs.worker.pi.function import PiFunction, PiParams

A, B = "a" * 32, "b" * 32
SHA = "5" * 64


def upload(
    upload_id: str, owner: str = "key-a", status: UploadStatus = UploadStatus.AVAILABLE
) -> UploadRecord:
    return UploadRecord(
        upload_id=upload_id,
        owner=owner,
        status=status,
        key=upload_key(owner, upload_id),
        bytes=12,
        sha256=SHA,
    )


def test_each_available_upload_of_the_owner_is_pinned_with_key_size_and_sha256() -> None:
    pinned = pin_inputs({"t": A, "u": B}, {A: upload(A), B: upload(B)}, owner="key-a")

    assert pinned == {
        "t": PinnedInput(upload_id=A, key=f"uploads/key-a/{A}", bytes=12, sha256=SHA),
        "u": PinnedInput(upload_id=B, key=f"uploads/key-a/{B}", bytes=12, sha256=SHA),
    }


def test_another_tenants_upload_reads_like_a_missing_one_and_every_problem_is_named() -> None:
    with pytest.raises(errors.ValidationError) as refused:
        pin_inputs(
            {"mine": A, "theirs": B, "gone": "c" * 32, "pending": "d" * 32},
            {
                A: upload(A),
                B: upload(B, owner="key-b"),
                "d" * 32: upload("d" * 32, status=UploadStatus.PENDING),
            },
            owner="key-a",
        )

    assert refused.value.details == [
        {"field": "params.inputs.gone", "problem": "no such upload"},
        {"field": "params.inputs.pending", "problem": "the upload is PENDING, not AVAILABLE"},
        {"field": "params.inputs.theirs", "problem": "no such upload"},
    ]


def test_a_record_pointing_outside_its_owners_prefix_is_never_pinned() -> None:
    stray = upload(A).model_copy(update={"key": f"uploads/key-b/{A}"})

    with pytest.raises(errors.ValidationError):
        pin_inputs({"t": A}, {A: stray}, owner="key-a")
    assert is_owned_key(f"uploads/key-a/{A}", "key-a")
    assert not is_owned_key("uploads/key-a/../key-b/x", "key-a")
    assert not is_owned_key("uploads/key-ab/x", "key-a") and not is_owned_key("results/key-a/x", "key-a")


def test_a_function_without_inputs_requests_none_and_accepts_inputs_needs_the_field() -> None:
    assert PiFunction().requested_inputs(PiParams(digits=5)) == {}

    class Broken(PiFunction):
        accepts_inputs = True

    function: BusinessFunction = Broken()
    with pytest.raises(FunctionRegistryError, match="inputs"):
        check_function(function, "broken")


def test_a_job_names_one_to_eight_inputs() -> None:
    """docs/functions.md: at most 8 inputs (and a job that takes inputs names at least one)."""
    inputs = TypeAdapter(Inputs)
    eight = {f"t{n}": f"{n:032x}" for n in range(8)}

    assert inputs.validate_python(eight) == eight
    for refused in ({**eight, "t8": "8" * 32}, {}):
        with pytest.raises(ValidationError):
            inputs.validate_python(refused)


def test_the_record_of_another_upload_is_never_pinned_for_the_one_named() -> None:
    with pytest.raises(errors.ValidationError) as refused:
        pin_inputs({"t": A}, {A: upload(B)}, owner="key-a")

    assert refused.value.details == [{"field": "params.inputs.t", "problem": "no such upload"}]
