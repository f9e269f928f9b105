"""`problem_of`: the one mapping of errors to problems, shared by the HTTP answers and the job runner."""

from __future__ import annotations

from app.containers.service import ContainerCreateError
from app.http.errors import ProblemError, problem_of
from app.images.search import ImageNotFound
from app.images.service import ImageCopyError
from app.jobs.runner import problem_for
from app.lxd.errors import LXDUnavailable, NotFound, OperationFailed
from app.networks.decisions import NoUsableNicError
from app.storage.service import StorageServiceError


class Exhausted(ProblemError):
    status = 507
    slug = "exhausted"


def test_a_problem_error_is_its_own_problem() -> None:
    exc = ProblemError(409, "name taken", slug="exists", used_by=["/1.0/instances/a"])
    assert problem_of(exc) is exc
    assert (exc.status, exc.slug, exc.title) == (409, "exists", "Conflict")
    assert ProblemError(404).slug == "not-found"


def test_a_subclass_takes_status_and_slug_from_its_class() -> None:
    exc = Exhausted("no room left")
    assert (exc.status, exc.slug, exc.detail, exc.title) == (507, "exhausted", "no room left", "Insufficient storage")


def test_lxd_errors_answering_a_request_quote_lxd_or_name_the_remote() -> None:
    missing = problem_of(NotFound("not found"), where="LXD")
    assert missing is not None
    assert (missing.status, missing.slug, missing.detail, missing.lxd_error) == (404, "not-found", "not found",
                                                                               "not found")
    gone = problem_of(LXDUnavailable("connection refused"), where="remote 'tls'")
    assert gone is not None
    assert (gone.status, gone.slug, gone.detail) == (503, "lxd-unavailable", "remote 'tls' is unreachable")


def test_lxd_errors_of_a_job_say_what_lxd_did_then_quote_it() -> None:
    failed = problem_of(OperationFailed("no space left on device"))
    assert failed is not None
    assert (failed.status, failed.slug, failed.detail) == (502, "lxd-operation-failed",
                                                           "LXD refused: no space left on device")
    body = problem_for(LXDUnavailable("connection refused"), kind="t.x", instance="/v1/jobs/1",
                       problem_of=problem_of)
    assert body["type"].endswith("/lxd-unavailable") and body["status"] == 503
    assert body["detail"] == "LXD is unreachable: connection refused" and body["lxd_error"] == "connection refused"
    assert body["title"] == "LXD unavailable" and body["instance"] == "/v1/jobs/1"


def test_lxd_errors_of_a_job_on_incus_name_incus() -> None:
    body = problem_for(LXDUnavailable("connection refused"), kind="t.x", problem_of=problem_of, backend="Incus")
    assert body["type"].endswith("/lxd-unavailable")  # the slug is the contract's, whatever the backend
    assert (body["title"], body["detail"]) == ("Incus unavailable", "Incus is unreachable: connection refused")
    body = problem_for(OperationFailed("Invalid protocol: lxd"), kind="t.x", problem_of=problem_of, backend="Incus")
    assert (body["title"], body["detail"]) == ("Incus operation failed", "Incus refused: Invalid protocol: lxd")
    body = problem_for(NotFound("not found"), kind="t.x", problem_of=problem_of, backend="Incus")
    assert body["title"] == "Not found"


def test_unknown_errors_are_left_to_the_caller() -> None:
    assert problem_of(ValueError("bad")) is None
    assert problem_for(ValueError("bad"), kind="t.x", problem_of=problem_of)["type"].endswith("/internal")


def test_a_service_error_raised_from_lxd_answers_lxds_status() -> None:
    try:
        try:
            raise NotFound("storage pool not found")
        except NotFound as exc:
            raise StorageServiceError('creating storage pool volume "v": storage pool not found') from exc
    except StorageServiceError as exc:
        mapped = problem_of(exc)
    assert mapped is not None
    assert (mapped.status, mapped.slug, mapped.lxd_error) == (404, "not-found", "storage pool not found")
    assert mapped.detail == 'creating storage pool volume "v": storage pool not found'
    alone = StorageServiceError("refused", slug="storage")
    assert problem_of(alone) is alone and (alone.status, alone.slug) == (409, "storage")


def test_service_errors_share_the_root_with_their_own_status() -> None:
    assert (ContainerCreateError("x").status, ContainerCreateError("x").slug) == (502, "create-failed")
    assert (ImageNotFound("x").status, ImageNotFound("x").slug) == (404, "image-not-found")
    assert (ImageCopyError("x").status, ImageCopyError("x").slug) == (502, "image-copy-failed")
    unusable = NoUsableNicError("no usable NIC")
    assert isinstance(unusable, ValueError) and (unusable.status, unusable.slug) == (409, "network-unusable")
