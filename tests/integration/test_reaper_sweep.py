"""The reaper's sweep at its edges: each deadline and timeout taken whole, a race lost without harm, the
stacks of earlier attempts removed (the behaviours the mutation run of dispatcher/reaper.py found untested,
docs/mutation.md)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

import pijobs.dispatcher.reaper
from pijobs.shared import metrics
from pijobs.shared.compute import CloudFormationBackend, Health, Infrastructure
from pijobs.shared.models import JobRecord, isoformat, utcnow
from pijobs.shared.status import JobStatus
from tests.integration.conftest import Cloud
from tests.integration.test_reaper import _running, reap


@pytest.fixture(autouse=True)
def _fresh_reaper(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIJOBS_RETRY_BASE_SECONDS", "0")
    pijobs.dispatcher.reaper.services.cache_clear()


def _at(stamp: str, seconds: float) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=seconds)


def test_a_job_has_its_whole_deadline_and_times_out_only_past_it(cloud: Cloud) -> None:
    job_id = _running(cloud)
    started = cloud.job(job_id)
    assert started.started_at is not None and started.deadline_seconds is not None
    end = _at(started.started_at, started.deadline_seconds)
    cloud.store.update_fields(job_id, JobStatus.RUNNING, heartbeat_at=isoformat(end))  # the worker is alive
    job = cloud.job(job_id)
    stack = Infrastructure(job_id, job.attempts, f"pijob-{job_id}-1", Health.LIVE)
    services = pijobs.dispatcher.reaper.services()

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, end) is None
    later = end + timedelta(milliseconds=1)
    assert pijobs.dispatcher.reaper.check_job(services, job, stack, later) == "timed_out"


def test_a_stack_left_by_an_earlier_attempt_is_deleted_and_the_current_one_kept(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt's stack outlived its attempt (its deletion failed): the retry's stack stays, the
    earlier one goes, and the job keeps its one slot."""
    job_id = _running(cloud)

    def refused(self: CloudFormationBackend, job_id: str, attempt: int | None) -> None:
        raise RuntimeError("DeleteStack refused")

    with monkeypatch.context() as patch:
        patch.setattr(CloudFormationBackend, "destroy", refused)
        assert reap(minutes_later=4)["actions"] == {job_id: "retried"}
    assert cloud.dispatch(cloud.receive()) == []
    assert sorted(s["StackName"] for s in cloud.live_stacks()) == [f"pijob-{job_id}-1", f"pijob-{job_id}-2"]

    assert reap()["actions"] == {f"pijob-{job_id}-1": "orphan_deleted"}

    assert [s["StackName"] for s in cloud.live_stacks()] == [f"pijob-{job_id}-2"]
    assert cloud.job(job_id).status is JobStatus.PROVISIONING
    assert cloud.capacity().state()["holders"] == {job_id}  # type: ignore[index]


def test_a_worker_that_keeps_sending_heartbeats_is_not_taken_for_lost(cloud: Cloud) -> None:
    """Silence counts from the last heartbeat, not from the start: a long job that reports stays alive."""
    job_id = _running(cloud)
    started = cloud.job(job_id)
    assert started.started_at is not None
    now = _at(started.started_at, 250)  # past the heartbeat timeout (180 s) since the start, not the deadline
    cloud.store.update_fields(job_id, JobStatus.RUNNING, heartbeat_at=isoformat(now - timedelta(seconds=10)))
    job = cloud.job(job_id)
    stack = Infrastructure(job_id, job.attempts, f"pijob-{job_id}-1", Health.LIVE)
    services = pijobs.dispatcher.reaper.services()

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, now) is None


def test_a_job_dispatched_while_the_reaper_resends_it_is_not_sent_again(cloud: Cloud) -> None:
    """The reaper read the job as queued too long; it was dispatched before the reaper's write: no copy of
    its message is sent, and the sweep goes on."""
    job_id = _running(cloud)
    assert reap(minutes_later=4)["actions"] == {job_id: "retried"}
    stale = cloud.job(job_id)
    assert stale.status is JobStatus.QUEUED and stale.wait_tag is None
    assert cloud.dispatch(cloud.receive()) == []  # the retry's message arrives first
    assert cloud.job(job_id).status is JobStatus.PROVISIONING
    services = pijobs.dispatcher.reaper.services()

    assert pijobs.dispatcher.reaper.check_job(services, stale, None, _at(stale.updated_at, 3600)) is None

    assert cloud.receive(wait_seconds=1) == []
    assert cloud.job(job_id).status is JobStatus.PROVISIONING


class RecordingCompute:
    """A compute backend that only notes what it was asked to destroy."""

    def __init__(self) -> None:
        self.destroyed: list[tuple[str, int | None]] = []

    def destroy(self, job_id: str, attempt: int | None) -> None:
        self.destroyed.append((job_id, attempt))


def test_an_orphan_stack_gives_back_the_slot_of_an_unknown_job_never_of_a_live_one(cloud: Cloud) -> None:
    job_id = _running(cloud)
    counter = cloud.capacity()
    counter.set_limit(5)
    unknown = "f" * 32
    counter.acquire(unknown)  # a slot held for a job with no record
    compute = RecordingCompute()
    services = dataclasses.replace(pijobs.dispatcher.reaper.services(), compute=compute)  # type: ignore[arg-type]
    orphans = [
        Infrastructure(job_id, 1, f"pijob-{job_id}-1", Health.LIVE),  # the live job's own: kept
        Infrastructure(unknown, 1, f"pijob-{unknown}-1", Health.LIVE),
        Infrastructure(job_id, None, f"pijob-{job_id}", Health.LIVE),  # the live job's, of no attempt
    ]

    actions = pijobs.dispatcher.reaper.delete_orphan_stacks(services, orphans, {job_id: cloud.job(job_id)})

    assert actions == {f"pijob-{unknown}-1": "orphan_deleted", f"pijob-{job_id}": "orphan_deleted"}
    assert compute.destroyed == [(unknown, 1), (job_id, None)]
    state = counter.state()
    assert state is not None and state["holders"] == {job_id} and state["active"] == 1


def test_a_recount_that_changes_the_count_says_so_in_the_log(cloud: Cloud) -> None:
    live = _running(cloud)
    counter = cloud.capacity()
    counter.set_limit(5)
    counter.acquire("f" * 32)  # a slot whose release was lost

    with capture_logs() as logs:
        pijobs.dispatcher.reaper.recount(pijobs.dispatcher.reaper.services(), [cloud.job(live)])
        pijobs.dispatcher.reaper.recount(pijobs.dispatcher.reaper.services(), [cloud.job(live)])  # nothing

    recounted = [entry for entry in logs if entry["event"] == "capacity_recounted"]
    assert [(e["log_level"], e["was"], e["now"]) for e in recounted] == [("warning", 2, 1)]


def test_a_worker_is_lost_only_past_the_heartbeat_timeout(cloud: Cloud) -> None:
    job_id = _running(cloud)
    heartbeat = isoformat(utcnow())
    cloud.store.update_fields(job_id, JobStatus.RUNNING, heartbeat_at=heartbeat)
    job = cloud.job(job_id)
    stack = Infrastructure(job_id, job.attempts, f"pijob-{job_id}-1", Health.LIVE)
    services = pijobs.dispatcher.reaper.services()
    timeout = services.settings.heartbeat_timeout_seconds

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, _at(heartbeat, timeout)) is None
    later = _at(heartbeat, timeout + 0.001)
    assert pijobs.dispatcher.reaper.check_job(services, job, stack, later) == "retried"
    assert cloud.job(job_id).error.code == "worker_lost"  # type: ignore[union-attr]


def test_a_provisioning_job_has_its_whole_provisioning_time(cloud: Cloud) -> None:
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    job = cloud.job(job_id)
    assert job.status is JobStatus.PROVISIONING and job.dispatched_at is not None
    stack = Infrastructure(job_id, job.attempts, f"pijob-{job_id}-1", Health.LIVE)
    services = pijobs.dispatcher.reaper.services()
    timeout = services.settings.provisioning_timeout_seconds

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, _at(job.dispatched_at, timeout)) is None
    later = _at(job.dispatched_at, timeout + 0.001)
    assert pijobs.dispatcher.reaper.check_job(services, job, stack, later) == "retried"
    assert cloud.job(job_id).error.code == "provisioning_timeout"  # type: ignore[union-attr]


def test_a_queued_job_without_a_message_for_too_long_is_sent_again_once(cloud: Cloud) -> None:
    """A retried job waits for its message, not in the index: when that message is lost, the reaper sends
    another once requeue_after_seconds passed since the last one, not before."""
    job_id = _running(cloud)
    assert reap(minutes_later=4)["actions"] == {job_id: "retried"}
    for lost in cloud.receive():  # the retry's message is lost with its consumer
        cloud.sqs.delete_message(QueueUrl=cloud.queue_url, ReceiptHandle=lost["receiptHandle"])
    job = cloud.job(job_id)
    assert job.status is JobStatus.QUEUED and job.wait_tag is None
    last = max(stamp for stamp in (job.updated_at, job.message_at) if stamp)
    services = pijobs.dispatcher.reaper.services()
    wait = services.settings.requeue_after_seconds

    assert pijobs.dispatcher.reaper.check_job(services, job, None, _at(last, wait)) is None
    assert cloud.receive(wait_seconds=1) == []
    assert pijobs.dispatcher.reaper.check_job(services, job, None, _at(last, wait + 1)) == "requeued"

    (message,) = cloud.receive(wait_seconds=2)
    assert json.loads(message["body"])["job_id"] == job_id
    assert cloud.dispatch([message]) == []
    assert cloud.job(job_id).status is JobStatus.PROVISIONING


def test_a_sweep_before_any_slot_was_taken_reports_none_active(cloud: Cloud) -> None:
    services = pijobs.dispatcher.reaper.services()
    assert services.capacity.state() is None  # a new installation: no job was ever admitted
    out = io.StringIO()

    pijobs.dispatcher.reaper.reap(services, utcnow(), metrics_to=out)

    (gauges,) = [json.loads(line) for line in out.getvalue().splitlines() if metrics.ACTIVE_STACKS in line]
    assert gauges[metrics.ACTIVE_STACKS] == 0
    assert gauges[metrics.MAX_ACTIVE_STACKS] == services.settings.max_active_stacks


def test_a_stack_is_called_vanished_only_past_the_grace_period(cloud: Cloud) -> None:
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    job = cloud.job(job_id)
    assert job.dispatched_at is not None
    services = pijobs.dispatcher.reaper.services()
    grace = services.settings.vanished_grace_seconds

    assert pijobs.dispatcher.reaper.check_job(services, job, None, _at(job.dispatched_at, grace)) is None
    later = _at(job.dispatched_at, grace + 0.001)
    with capture_logs() as logs:
        assert pijobs.dispatcher.reaper.check_job(services, job, None, later) == "retried"
    assert cloud.job(job_id).error.code == "stack_vanished"  # type: ignore[union-attr]
    (retrying,) = [e for e in logs if e["event"] == "job_retrying"]  # the operator's why, in the log only
    assert retrying["code"] == "stack_vanished" and retrying["reason"] == "the job's stack disappeared"


def test_a_job_the_reaper_cannot_handle_does_not_stop_the_sweep(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.capacity().set_limit(4)  # both of one tenant's jobs admitted (its cap is half the slots)
    broken, healthy = _running(cloud), _running(cloud)
    retry = pijobs.dispatcher.reaper.retry_or_fail

    def retry_or_fail(services: object, job: JobRecord, **why: str) -> JobStatus:
        if job.job_id == broken:
            raise RuntimeError("the store refused")
        return retry(services, job, **why)  # type: ignore[arg-type]

    monkeypatch.setattr(pijobs.dispatcher.reaper, "retry_or_fail", retry_or_fail)

    with capture_logs() as logs:
        assert reap(minutes_later=4)["actions"] == {broken: "error", healthy: "retried"}

    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["reap_job_failed"]
    assert cloud.job(healthy).status is JobStatus.QUEUED
    assert cloud.job(broken).status is JobStatus.RUNNING  # the next sweep tries again


def test_a_recount_whose_write_loses_to_a_new_slot_changes_nothing_and_says_nothing(cloud: Cloud) -> None:
    """A slot taken between the recount's read and its write: the write is refused (the next sweep
    recounts), and no capacity_recounted line claims a change that did not happen."""
    live = _running(cloud)
    counter = cloud.capacity()
    counter.set_limit(5)
    counter.acquire("f" * 32)  # a slot whose release was lost
    services = pijobs.dispatcher.reaper.services()

    class SlotTakenMeanwhile:
        def __getattr__(self, name: str) -> object:
            return getattr(services.capacity, name)

        def recount(self, holders: dict[str, str], *, expected_active: int | None = None) -> bool:
            counter.acquire("e" * 32)
            return services.capacity.recount(holders, expected_active=expected_active)

    racing = dataclasses.replace(services, capacity=SlotTakenMeanwhile())  # type: ignore[arg-type]

    with capture_logs() as logs:
        pijobs.dispatcher.reaper.recount(racing, [cloud.job(live)])

    assert [e for e in logs if e["event"] == "capacity_recounted"] == []
    state = counter.state()
    assert state is not None and state["active"] == 3  # the write was refused; the next sweep recounts


def test_each_sweep_reports_the_jobs_waiting_for_a_slot(cloud: Cloud) -> None:
    cloud.capacity().set_limit(1)
    cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []  # one admitted, one parked
    out = io.StringIO()

    pijobs.dispatcher.reaper.reap(pijobs.dispatcher.reaper.services(), utcnow(), metrics_to=out)

    (gauges,) = [json.loads(line) for line in out.getvalue().splitlines() if metrics.WAITING_JOBS in line]
    assert gauges[metrics.WAITING_JOBS] == 1 and gauges[metrics.ACTIVE_STACKS] == 1


def test_a_job_that_finished_as_it_timed_out_keeps_its_result(cloud: Cloud) -> None:
    """The reaper read the job as running past its deadline; it succeeded before the reaper's write: the
    success stands and the sweep reports the lost race."""
    job_id = _running(cloud)
    stale = cloud.job(job_id)
    assert stale.started_at is not None and stale.deadline_seconds is not None
    cloud.store.transition(job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    services = pijobs.dispatcher.reaper.services()
    later = _at(stale.started_at, stale.deadline_seconds + 60)

    assert pijobs.dispatcher.reaper.check_job(services, stale, None, later) == "lost_race"
    job = cloud.job(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.error is None


def test_a_sweep_that_changed_something_logs_at_info_and_a_routine_one_below_it(cloud: Cloud) -> None:
    """At the default level the log shows the sweeps that did something, not the clock."""
    job_id = _running(cloud)

    with capture_logs() as logs:
        reap(minutes_later=1)  # healthy
        reap(minutes_later=4)  # the worker is lost: retried

    swept = [(e["log_level"], e["actions"]) for e in logs if e["event"] == "reaper_swept"]
    assert swept == [("info", 1)]
    assert cloud.job(job_id).status is JobStatus.QUEUED


def test_a_first_sweep_counts_the_jobs_finished_in_the_last_minute_not_before(cloud: Cloud) -> None:
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.run_worker(job_id) == 0
    finished = cloud.job(job_id).finished_at
    assert finished is not None
    services = pijobs.dispatcher.reaper.services()
    lag = services.settings.metrics_lag_seconds
    out = io.StringIO()

    # the window of a first sweep: the minute before (now - lag); the job finished 30 s before it opened
    pijobs.dispatcher.reaper.reap(services, _at(finished, lag + 60 + 30), metrics_to=out)

    documents = [json.loads(line) for line in out.getvalue().splitlines()]
    (succeeded,) = [d["JobsSucceeded"] for d in documents if "JobsSucceeded" in d]
    assert succeeded == 0


def test_a_retry_s_provisioning_is_not_timed_out_by_the_first_attempt_s_start(cloud: Cloud) -> None:
    """The deadline counts from the start of the running attempt: a second attempt still provisioning is not
    past it because the first attempt started long ago."""
    job_id = _running(cloud)
    assert reap(minutes_later=4)["actions"] == {job_id: "retried"}
    assert cloud.dispatch(cloud.receive()) == []
    job = cloud.job(job_id)
    assert job.status is JobStatus.PROVISIONING and job.attempts == 2
    assert job.started_at is not None and job.deadline_seconds is not None  # the first attempt's start
    stack = Infrastructure(job_id, 2, f"pijob-{job_id}-2", Health.LIVE)
    now = _at(job.started_at, job.deadline_seconds + 60)
    services = pijobs.dispatcher.reaper.services()
    assert job.dispatched_at is not None
    since_dispatch = (now - _at(job.dispatched_at, 0)).total_seconds()
    assert since_dispatch < services.settings.provisioning_timeout_seconds  # and the provisioning in time

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, now) is None
    assert cloud.job(job_id).status is JobStatus.PROVISIONING


def test_a_running_job_is_never_taken_for_a_provisioning_that_took_too_long(cloud: Cloud) -> None:
    """A job with a deadline longer than the provisioning timeout runs on, heartbeat after heartbeat."""
    job_id = _running(cloud)
    services = pijobs.dispatcher.reaper.services()
    dispatched = cloud.job(job_id).dispatched_at
    assert dispatched is not None
    now = _at(dispatched, services.settings.provisioning_timeout_seconds + 60)
    cloud.store.update_fields(job_id, JobStatus.RUNNING, heartbeat_at=isoformat(now))
    job = cloud.job(job_id).model_copy(update={"deadline_seconds": 4 * 3600})  # a long job's deadline
    stack = Infrastructure(job_id, job.attempts, f"pijob-{job_id}-1", Health.LIVE)

    assert pijobs.dispatcher.reaper.check_job(services, job, stack, now) is None
    assert cloud.job(job_id).status is JobStatus.RUNNING


def test_a_stack_that_vanishes_just_after_a_slow_provisioning_is_noticed_at_once(cloud: Cloud) -> None:
    """The grace covers a stack's creation, counted from the dispatch: a job that took minutes to start and
    whose stack is then gone is not given the grace again from its start."""
    job_id = _running(cloud)
    job = cloud.job(job_id)
    assert job.started_at is not None and job.updated_at is not None
    slow = job.model_copy(update={"dispatched_at": isoformat(_at(job.started_at, -300))})  # 5 min to start
    services = pijobs.dispatcher.reaper.services()
    now = _at(job.updated_at, services.settings.vanished_grace_seconds / 2)

    assert pijobs.dispatcher.reaper.check_job(services, slow, None, now) == "retried"
    assert cloud.job(job_id).error.code == "stack_vanished"  # type: ignore[union-attr]
