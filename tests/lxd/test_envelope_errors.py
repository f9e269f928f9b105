"""Envelope decoding and the error tree, including what LXD cannot be made to produce on demand."""

from __future__ import annotations

import httpx
import pytest

import app.lxd as lxd
from app.lxd.envelope import decode
from app.lxd.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LXDError,
    LXDUnavailable,
    NotCancellable,
    NotFound,
    OperationCancelled,
    OperationConflict,
    OperationFailed,
    PreconditionFailed,
    error_for,
    operation_error,
)
from app.lxd.models import OperationState, Progress, normalise_mode


def resp(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("GET", "http://lxd/1.0/x"))


def test_error_body_under_http_200_raises() -> None:
    body = {"type": "error", "error": "boom", "error_code": 500, "metadata": None}
    with pytest.raises(LXDError) as info:
        decode(resp(200, body))
    assert info.value.error == "boom" and info.value.status == 500 and info.value.path == "/1.0/x"


def test_sync_with_etag_and_async() -> None:
    env = decode(resp(200, {"type": "sync", "status_code": 200, "metadata": {"a": 1}}, {"ETag": '"abc"'}))
    assert env.metadata == {"a": 1} and env.etag == "abc" and not env.is_async
    env = decode(resp(202, {"type": "async", "status_code": 100, "operation": "/1.0/operations/u1",
                            "metadata": {"id": "u1"}}))
    assert env.is_async and env.operation_id == "u1"


def test_non_envelope_answers() -> None:
    r = httpx.Response(502, text="bad gateway", request=httpx.Request("GET", "http://lxd/1.0"))
    with pytest.raises(LXDError, match="bad gateway"):
        decode(r)
    with pytest.raises(LXDError, match="non-envelope"):
        decode(resp(200, [1, 2]))


@pytest.mark.parametrize(("status", "text", "cls"), [
    (400, "bad", BadRequest), (403, "no", Forbidden), (404, "not found", NotFound), (409, "x", Conflict),
    (412, "ETag does not match", PreconditionFailed), (500, 'Profile "p" already exists', Conflict),
    (500, "Profile is in use", Conflict), (500, "other", LXDError), (503, "down", LXDUnavailable),
    (400, "This operation can't be cancelled", NotCancellable),
])
def test_status_mapping(status: int, text: str, cls: type[LXDError]) -> None:
    err = error_for(status, text, method="GET", path="/1.0/p", operation_id="op1")
    assert type(err) is cls and err.status == status and err.operation_id == "op1"
    assert str(err) == f"[{status}] {text} (GET /1.0/p) [operation op1]"


def test_operation_errors() -> None:
    failed = operation_error(OperationState(id="o", status_code=400, err="disk full"))
    assert type(failed) is OperationFailed and failed.operation_id == "o"
    conflict = operation_error(OperationState(id="o", status_code=400, err='This "instances" entry already exists'))
    assert isinstance(conflict, OperationConflict) and isinstance(conflict, Conflict)
    assert isinstance(operation_error(OperationState(id="o", status_code=401)), OperationCancelled)


def test_mode_normalisation() -> None:
    assert [normalise_mode(m) for m in (0o644, "644", "0644", "0o755", 0o4755, None)] == \
        ["0644", "0644", "0644", "0755", "4755", "0644"]
    with pytest.raises(ValueError):
        normalise_mode(0o17777)


def test_progress_from_both_metadata_shapes() -> None:
    p = Progress.from_metadata({"download_progress": "rootfs: 45% (1MB/s)",
                                "progress": {"stage": "download", "percent": "45", "speed": "1000"}})
    assert p is not None and (p.stage, p.percent, p.speed, p.text) == ("download", 45, 1000, "rootfs: 45% (1MB/s)")
    p = Progress.from_metadata({"create_instance_from_image_unpack_progress": "Unpack: 10%"})
    assert p is not None and p.stage == "create_instance_from_image_unpack" and p.percent is None
    assert Progress.from_metadata({"fds": {}}) is None


def test_models_keep_unknown_fields() -> None:
    st = OperationState.model_validate({"id": "x", "class": "task", "status_code": 103, "requestor": {"u": 1}})
    assert st.class_ == "task" and st.model_extra == {"requestor": {"u": 1}} and not st.final


def test_public_names_sorted_and_exported() -> None:
    assert lxd.__all__ == sorted(lxd.__all__)
    assert all(hasattr(lxd, n) for n in lxd.__all__)


def test_no_io_in_constructors(tmp_path: object) -> None:
    lxd.Client.unix(f"{tmp_path}/missing.socket")
    lxd.Client.https("https://192.0.2.1:8443", client_cert="/nonexistent.crt", client_key="/nonexistent.key",
                     server_fingerprint="00" * 32)
    with pytest.raises(ValueError):
        lxd.Client.https("https://x", client_cert="c", client_key="k", server_fingerprint="short")


def test_ambiguous_prefix_is_a_bad_request_not_a_server_error() -> None:
    from app.lxd.errors import BadRequest, error_for

    assert isinstance(error_for(500, "More than one certificate matches"), BadRequest)
    assert isinstance(error_for(500, "More than one image matches"), BadRequest)
    assert not isinstance(error_for(500, "some other failure"), BadRequest)
