"""The reaper under moto: every stuck or orphaned job ends terminal or retried; nothing is left behind."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest

import pijobs.dispatcher.handler
import pijobs.dispatcher.reaper
import pijobs.dispatcher.service
from pijobs.shared import metrics
from pijobs.shared.lifecycle import Lifecycle
from pijobs.shared.models import isoformat, utcnow
from pijobs.shared.status import JobStatus
from tests.integration.conftest import Cloud


@pytest.fixture(autouse=True)
def _fresh_reaper(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIJOBS_RETRY_BASE_SECONDS", "0")
    pijobs.dispatcher.reaper.services.cache_clear()


def reap(minutes_later: float = 0) -> dict[str, object]:
    return pijobs.dispatcher.reaper.reap(
        pijobs.dispatcher.reaper.services(), utcnow() + timedelta(minutes=minutes_later)
    )


def _running(cloud: Cloud, digits: int = 40) -> str:
    """A job whose worker started (RUNNING) and then went silent, as a SIGKILLed worker does."""
    job_id = cloud.submit(digits=digits)
    assert cloud.dispatch(cloud.receive()) == []
    cloud.store.transition(job_id, JobStatus.PROVISIONING, JobStatus.RUNNING, started_at=utcnow().isoformat())
    return job_id


def test_a_dead_worker_is_retried_and_the_retry_succeeds(cloud: Cloud) -> None:
    job_id = _running(cloud)
    first_stack = cloud.job(job_id).stack_name

    assert reap(minutes_later=1)["actions"] == {}  # within the heartbeat timeout: healthy
    assert reap(minutes_later=4)["actions"] == {job_id: "retried"}

    job = cloud.job(job_id)
    assert job.status is JobStatus.QUEUED and job.error is not None and job.error.code == "worker_lost"
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]
    assert cloud.dispatch(cloud.receive()) == []
    job = cloud.job(job_id)
    assert job.attempts == 2 and job.stack_name != first_stack
    assert cloud.run_worker(job_id) == 0
    job = cloud.job(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.error is None  # not the first attempt's error
    assert cloud.live_stacks() == []
    status, view, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 200 and view["error"] is None and view["attempts"] == 2
    (entry,) = view["history"]  # the first attempt, in the words a customer may read
    assert entry["attempt"] == 1 and entry["code"] == "worker_lost" and entry["at"]
    assert entry["message"] == "the job's instance stopped reporting progress"


def test_a_worker_that_keeps_dying_fails_after_the_last_attempt(cloud: Cloud) -> None:
    job_id = _running(cloud)
    for attempt in (1, 2):
        assert reap(minutes_later=4)["actions"] == {job_id: "retried"}, attempt
        assert cloud.dispatch(cloud.receive()) == []
        cloud.store.transition(job_id, JobStatus.PROVISIONING, JobStatus.RUNNING)

    assert reap(minutes_later=4)["actions"] == {job_id: "failed"}

    job = cloud.job(job_id)
    assert job.status is JobStatus.FAILED and job.attempts == 3
    assert [(entry.attempt, entry.code) for entry in job.history] == [(n, "worker_lost") for n in (1, 2, 3)]
    assert cloud.live_stacks() == [] and cloud.receive() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_a_vanished_stack_is_noticed(cloud: Cloud) -> None:
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    cloud.cfn.delete_stack(StackName=cloud.job(job_id).stack_name)

    assert reap(minutes_later=0.5)["actions"] == {}  # the grace period covers a create in flight
    assert reap(minutes_later=2)["actions"] == {job_id: "retried"}
    assert cloud.job(job_id).error.code == "stack_vanished"  # type: ignore[union-attr]


def test_a_job_past_its_deadline_times_out(cloud: Cloud) -> None:
    job_id = _running(cloud)
    deadline = cloud.job(job_id).deadline_seconds
    assert deadline is not None

    assert reap(minutes_later=deadline / 60 + 1)["actions"] == {job_id: "timed_out"}

    job = cloud.job(job_id)
    assert job.status is JobStatus.TIMED_OUT and job.error.code == "deadline_exceeded"  # type: ignore[union-attr]
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_the_stack_of_a_cancelled_job_is_deleted_and_its_slot_returned(cloud: Cloud) -> None:
    """The cancel ends the attempt at once (the lifecycle); the reaper finds nothing left to do."""
    job_id = _running(cloud)
    assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202

    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]
    assert reap()["actions"] == {}


def test_the_capacity_counter_is_recounted_from_the_records(cloud: Cloud) -> None:
    live = _running(cloud)
    counter = cloud.capacity()
    counter.set_limit(5)
    counter.acquire("f" * 32)  # a slot whose release was lost
    counter.acquire("e" * 32)
    assert counter.state()["active"] == 3  # type: ignore[index]

    reap()

    state = counter.state()
    assert state is not None and state["active"] == 1 and state["holders"] == {live}


def test_a_job_whose_message_was_lost_is_admitted_by_the_tick_the_reaper_starts(cloud: Cloud) -> None:
    job_id = cloud.submit()  # parked at submit
    for lost in cloud.receive():  # the message is lost with its consumer
        cloud.sqs.delete_message(QueueUrl=cloud.queue_url, ReceiptHandle=lost["receiptHandle"])

    assert reap(minutes_later=20)["actions"] == {"admission_tick": "restarted"}  # not a copy of the job
    assert reap(minutes_later=21)["actions"] == {}  # one tick at a time
    assert cloud.job(job_id).wait_tag is not None  # still parked, waiting for that tick
    (tick,) = cloud.receive(wait_seconds=2)
    assert json.loads(tick["body"])["job_id"] is None
    assert cloud.dispatch([tick]) == []
    assert cloud.job(job_id).status is JobStatus.PROVISIONING


def test_a_parked_job_is_never_sent_again_and_a_lost_admission_tick_is_restarted(cloud: Cloud) -> None:
    """A job waiting for capacity waits in the index, not in the queue: the reaper sends no copy of it,
    however long it waits; if the one tick that admits waiting jobs is lost, the reaper starts another."""
    cloud.capacity().set_limit(1)
    first, second = cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.job(first).status is JobStatus.PROVISIONING
    assert cloud.job(second).status is JobStatus.QUEUED and cloud.job(second).wait_tag is not None
    assert reap()["actions"] == {}  # the tick is on its way: nothing to do
    for lost in cloud.receive(wait_seconds=2):  # the tick is lost with its consumer
        cloud.sqs.delete_message(QueueUrl=cloud.queue_url, ReceiptHandle=lost["receiptHandle"])
    assert cloud.run_worker(first) == 0  # a slot frees; nobody will admit the second job without a tick

    actions = reap(minutes_later=40)["actions"]

    assert actions == {"admission_tick": "restarted"}  # and not {second: "requeued"}
    assert reap(minutes_later=40)["actions"] == {}  # one tick at a time
    (tick,) = cloud.receive(wait_seconds=2)
    assert json.loads(tick["body"])["job_id"] is None and json.loads(tick["body"])["tick"] is not None
    assert cloud.dispatch([tick]) == []
    assert cloud.job(second).status is JobStatus.PROVISIONING
    assert cloud.receive(wait_seconds=2) == []  # nobody waits: the chain of ticks ended


def test_no_job_id_leaks_into_the_next_event(cloud: Cloud) -> None:
    """The sweep's summary and the next invocation carry no job_id of a job looked at before."""
    import structlog

    import pijobs.dispatcher.handler

    _running(cloud)
    assert reap()["live"] == 1
    assert "job_id" not in structlog.contextvars.get_contextvars()  # reaper_swept is logged without one

    structlog.contextvars.bind_contextvars(job_id="f" * 32)  # left over from an earlier invocation
    assert pijobs.dispatcher.handler.process_record({"messageId": "m", "body": "not json"}) is False
    assert "job_id" not in structlog.contextvars.get_contextvars()


def test_a_provisioning_job_keeps_its_stack_before_the_stack_name_is_recorded(cloud: Cloud) -> None:
    """The dispatcher records the name once CreateStack returns; until then the stack is still the job's."""
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    cloud.ddb.update_item(  # the moment between CreateStack and the record's stack_name
        TableName=cloud.table,
        Key={"pk": {"S": f"job#{job_id}"}},
        UpdateExpression="REMOVE stack_name, stack_id",
    )
    assert cloud.job(job_id).status is JobStatus.PROVISIONING and cloud.job(job_id).stack_name is None

    assert reap()["actions"] == {}

    assert [stack["StackName"] for stack in cloud.live_stacks()] == [f"pijob-{job_id}-1"]
    assert cloud.job(job_id).status is JobStatus.PROVISIONING
    assert cloud.capacity().state()["holders"] == {job_id}  # type: ignore[index]


def test_a_running_job_whose_stack_name_the_dispatcher_could_not_record_is_not_taken_for_vanished(
    cloud: Cloud,
) -> None:
    """The worker started before the dispatcher wrote the stack's name (that write then loses): the reaper
    finds the stack under the name derived from the attempt instead of retrying a healthy job."""
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    stack_name = cloud.job(job_id).stack_name
    cloud.ddb.update_item(
        TableName=cloud.table,
        Key={"pk": {"S": f"job#{job_id}"}},
        UpdateExpression="REMOVE stack_name, stack_id",
    )
    assert cloud.worker_call(job_id, "start", token=cloud.worker_token(job_id))[0] == 200

    assert reap(minutes_later=2)["actions"] == {}

    job = cloud.job(job_id)
    assert job.status is JobStatus.RUNNING and job.history == [] and stack_name
    assert len(cloud.live_stacks()) == 1


def test_a_provisioning_job_whose_stack_name_was_not_recorded_is_not_called_vanished(cloud: Cloud) -> None:
    """The dispatcher died between CreateStack and recording the name: the stack is there under the name
    derived from the attempt, so the job is healthy, not vanished."""
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    cloud.store.update_fields(job_id, JobStatus.PROVISIONING, stack_name=None, stack_id=None)

    assert reap(minutes_later=2)["actions"] == {}  # past the vanished grace, within the provisioning timeout
    assert cloud.job(job_id).status is JobStatus.PROVISIONING and len(cloud.live_stacks()) == 1


# ---- metrics (EMF lines, shared/metrics.py) ---------------------------------------------------------------
def _sweep_metrics(minutes_later: float) -> list[dict[str, object]]:
    out = io.StringIO()
    moment = utcnow() + timedelta(minutes=minutes_later)
    pijobs.dispatcher.reaper.reap(pijobs.dispatcher.reaper.services(), moment, metrics_to=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _metric(documents: list[dict[str, object]], name: str) -> object:
    (value,) = [d[name] for d in documents if name in d]
    return value


def test_each_sweep_reports_capacity_and_the_jobs_finished_since_the_last_one(cloud: Cloud) -> None:
    finished = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.run_worker(finished) == 0
    running = _running(cloud)

    first = _sweep_metrics(minutes_later=1)
    second = _sweep_metrics(minutes_later=1.5)

    for documents in (first, second):
        assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == metrics.NAMESPACE for d in documents)  # type: ignore[index]
        assert all(d[metrics.STACK_DIMENSION] == "pijobs" for d in documents)
        assert _metric(documents, metrics.ACTIVE_STACKS) == 1  # the running job's slot
        assert _metric(documents, metrics.MAX_ACTIVE_STACKS) == 2
        assert _metric(documents, metrics.WAITING_JOBS) == 0
    assert _metric(first, "JobsSucceeded") == 1 and _metric(first, "JobsFailed") == 0
    assert len(_metric(first, "RunningSeconds")) == 1  # type: ignore[arg-type]
    assert _metric(second, "JobsSucceeded") == 0  # counted once, by the first sweep
    assert not any("RunningSeconds" in d for d in second)
    assert cloud.job(running).status is JobStatus.RUNNING


def test_two_sweeps_at_once_count_a_finished_job_once(cloud: Cloud) -> None:
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.run_worker(job_id) == 0
    store, later = cloud.store, utcnow() + timedelta(seconds=30)

    claims = [
        store.advance_metrics_watermark(isoformat(later), start="2000-01-01T00:00:00.000Z") for _ in "ab"
    ]

    assert claims == ["2000-01-01T00:00:00.000Z", None]
    (job,) = store.finished_between(claims[0], isoformat(later))  # type: ignore[arg-type]
    assert job["job_id"] == job_id and job["status"] == "SUCCEEDED" and job["started_at"]


def test_a_metrics_failure_is_logged_and_the_sweep_goes_on(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from pijobs.shared.store import JobStore

    def broken(self: JobStore, after: str, until: str) -> list[dict[str, object]]:
        raise RuntimeError("the index is not there")

    monkeypatch.setattr(JobStore, "finished_between", broken)
    job_id = _running(cloud)

    with capture_logs() as logs:
        documents = _sweep_metrics(minutes_later=4)

    assert cloud.job(job_id).status is JobStatus.QUEUED  # the dead worker's job was still retried
    assert _metric(documents, metrics.ACTIVE_STACKS) == 0
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["metrics_failed"]


def test_a_timed_out_job_gives_its_slot_back_when_it_times_out(cloud: Cloud) -> None:
    """Not only through the recount later in the sweep: the time-out itself releases the slot."""
    job_id = _running(cloud)
    job = cloud.job(job_id)
    assert job.deadline_seconds is not None
    services = pijobs.dispatcher.reaper.services()
    later = utcnow() + timedelta(seconds=job.deadline_seconds + 60)

    assert pijobs.dispatcher.reaper.check_job(services, job, None, later) == "timed_out"

    state = cloud.capacity().state()
    assert state is not None and state["active"] == 0 and state["holders"] == set() and state["owners"] == {}


def test_the_recount_keeps_a_live_holder_the_index_has_not_shown_yet(cloud: Cloud) -> None:
    """The live index lags: a holder missing from it is dropped only when its own record says it ended."""
    cloud.capacity().set_limit(4)  # both of one tenant's jobs admitted (its cap is half the slots)
    live = _running(cloud)
    ended = _running(cloud)
    cloud.store.transition(ended, JobStatus.RUNNING, JobStatus.SUCCEEDED)  # its release was lost
    counter = cloud.capacity()
    before = counter.state()
    assert before is not None and before["holders"] == {live, ended}

    pijobs.dispatcher.reaper.recount(pijobs.dispatcher.reaper.services(), [])  # the index shows neither

    state = counter.state()
    assert state is not None and state["holders"] == {live} and state["active"] == 1
    assert state["owners"] == {cloud.job(live).owner: 1}


def test_the_recount_drops_a_holder_without_a_record_and_still_reads_the_others(cloud: Cloud) -> None:
    """A slot held by an id that has no job record (taken by hand, its record deleted) is given back; the
    holders read after it are still read, so a live job the index has not shown yet keeps its slot."""
    cloud.capacity().set_limit(4)
    live = _running(cloud)
    unknown = "0" * len(live)  # read before every other id
    cloud.capacity().acquire(unknown, owner="key-x")

    pijobs.dispatcher.reaper.recount(pijobs.dispatcher.reaper.services(), [])  # the index shows neither

    state = cloud.capacity().state()
    assert state is not None and state["holders"] == {live} and state["active"] == 1
    assert state["owners"] == {cloud.job(live).owner: 1}


class FailingCompute:
    """A compute backend whose destroy fails (the stack's deletion was refused)."""

    def __init__(self) -> None:
        self.destroyed: list[tuple[str, int | None]] = []

    def launch(self, request: object) -> object:
        raise AssertionError("nothing is launched here")

    def describe(self) -> list[object]:
        return []

    def destroy(self, job_id: str, attempt: int | None) -> None:
        self.destroyed.append((job_id, attempt))
        raise RuntimeError("DeleteStack refused")


def test_an_ended_attempt_gives_its_slot_back_even_when_destroying_its_infrastructure_fails(
    cloud: Cloud,
) -> None:
    job_id = _running(cloud)
    compute = FailingCompute()
    lifecycle = Lifecycle(cloud.store, cloud.capacity(), compute)  # type: ignore[arg-type]

    lifecycle.transition(cloud.job(job_id), JobStatus.FAILED, error={"code": "worker_lost", "message": "x"})

    assert compute.destroyed == [(job_id, 1)]
    state = cloud.capacity().state()
    assert state is not None and state["active"] == 0 and state["holders"] == set()
    assert cloud.job(job_id).status is JobStatus.FAILED
