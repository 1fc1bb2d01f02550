"""The customer console as a customer uses it, in headless Chromium against the embedded stack: sign in,
submit through the form generated from a function's schema, watch the job, download and check its result,
cancel, filter, see a refused field on the field itself, and all of it from the keyboard."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from pijobs.client import PijobsClient
from pijobs.shared.inputs import NOT_FOUND
from pijobs.shared.models import job_key
from tests.browser.conftest import Console

playwright = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (tox -e browser installs it)"
)
expect = playwright.expect
pytestmark = pytest.mark.browser


def wait_for(client: PijobsClient, job_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.get(job_id))["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def fill_form(console: Console, function: str, values: dict[str, str], name: str) -> None:
    page = console.page
    page.click("#nav-submit")
    page.select_option("#submit-function", function)
    for field, value in values.items():
        page.fill(f"#field-params-{field}", value)
    page.fill("#field-name", name)


def test_a_wrong_key_is_refused_plainly_and_a_good_one_is_kept_in_the_tab_only(
    console: Console, key: str
) -> None:
    page = console.open().page
    expect(page.locator("#api-key")).to_be_focused()
    console.screenshot("signin")

    page.fill("#api-key", "not-a-key-of-this-api")
    page.click("#signin-form button[type=submit]")

    expect(page.locator("#signin-error")).to_have_text(re.compile(r"refused \(403\)"))
    expect(page.locator("#api-key")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")

    expect(page.locator("#view-jobs")).to_be_visible()
    expect(page.locator("#jobs-empty")).to_be_visible()  # a new key: no jobs yet
    assert page.evaluate("Object.values(sessionStorage)") == [key]
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    keyed = [r for r in console.requests if "x-api-key" in r.headers]
    assert keyed and all(r.url.startswith(console.stack.api_url + "/") for r in keyed)
    assert not any(key in r.url for r in console.requests)  # never in a URL

    page.click("#sign-out")
    expect(page.locator("#view-signin")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_submit_from_the_generated_form_then_download_and_check_the_result(
    console: Console, key: str, tmp_path: Path
) -> None:
    page = console.sign_in(key).page
    fill_form(console, "pi", {"digits": "2000"}, "pi from the browser")
    expect(page.locator("#field-params-digits")).to_have_attribute("aria-required", "true")
    expect(page.locator("#field-params-digits-hint")).to_contain_text(
        "1 to 10,000,000"
    )  # the deployment's bound
    console.screenshot("submit")
    page.click("#submit-button")

    expect(page.locator("#view-detail")).to_be_visible()
    expect(page.locator("#detail-status")).to_have_text("SUCCEEDED")
    expect(page.locator("#detail-progressbar")).to_have_js_property("value", 100)
    expect(page.locator("#detail-progress-label")).to_have_text("100 %")
    expect(page.locator("#detail-timeline")).to_contain_text("Running:")
    expect(page.locator("#detail-params")).to_contain_text("2000")
    shown_sha256 = page.locator('#detail-result [data-key="sha256"]').inner_text()
    console.screenshot("detail")

    with page.expect_download() as download_info:
        page.click("#detail-download")
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    assert download.suggested_filename == "pi-2000.txt"
    content = saved.read_bytes()
    job_id = page.url.rsplit("/", 1)[-1]
    job = PijobsClient(console.stack.api_url, key).get(job_id)
    assert hashlib.sha256(content).hexdigest() == shown_sha256 == job["result"]["sha256"]
    digits = content.decode().splitlines()[-1]
    assert digits.startswith("3.14159265358979323846") and len(digits) == 2 + 2000
    assert len(content) == job["result"]["bytes"]

    page.click("#nav-jobs")
    row = page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text("pi from the browser")
    expect(row.locator("progress")).to_have_js_property("value", 100)
    console.screenshot("jobs")


def test_the_progress_bar_moves_while_the_job_runs_and_ends_at_100(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    earlier = [
        client.submit("pi", {"digits": 5000}, name="monthly report", cost_center="cc-42")["job_id"],
        client.submit("pi", {"digits": 100_000}, name="benchmark 100k")["job_id"],
    ]
    for job_id in earlier:
        wait_for(client, job_id, "SUCCEEDED")
    page = console.sign_in(key).page
    fill_form(console, "word-count", {"text": "to be or not to be", "pause_seconds": "4"}, "slow count")
    page.click("#submit-button")
    expect(page.locator("#detail-status")).to_have_text("RUNNING")
    job_id = page.url.rsplit("/", 1)[-1]
    page.click("#nav-jobs")  # the list polls too: watch the row's bar

    bar = page.locator(f'#jobs-body tr[data-job-id="{job_id}"] progress')
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while 100 not in seen:
        assert time.monotonic() < deadline, f"the bar showed only {sorted(seen)}"
        value = bar.evaluate("p => p.hasAttribute('value') ? Math.round(p.value) : -1")
        if 0 < value < 100 and not any(0 < v < 100 for v in seen):
            console.screenshot("jobs-running")
        seen.add(value)
        time.sleep(0.1)

    assert any(0 < value < 100 for value in seen), sorted(seen)  # it moved before the end
    expect(page.locator(f'#jobs-body tr[data-job-id="{job_id}"] .badge')).to_have_text("SUCCEEDED")


def test_cancel_a_long_job_after_confirming(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    page = console.sign_in(key).page
    fill_form(console, "word-count", {"text": "long", "pause_seconds": "300"}, "long one")
    page.click("#submit-button")
    expect(page.locator("#detail-status")).to_have_text("RUNNING")
    job_id = page.url.rsplit("/", 1)[-1]

    page.click("#detail-cancel")  # changing one's mind: the dialog's Escape keeps the job
    expect(page.locator("#confirm-cancel")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#confirm-cancel")).to_be_hidden()
    assert client.get(job_id)["status"] == "RUNNING"

    page.click("#detail-cancel")
    page.click("#confirm-yes")

    expect(page.locator("#detail-status")).to_have_text("CANCELLED")
    expect(page.locator("#notice")).to_have_text("The job was cancelled.")
    expect(page.locator("#detail-cancel")).to_be_hidden()
    expect(page.locator("#detail-failure-title")).to_have_text("This job was cancelled")
    expect(page.locator("#detail-failure-message")).to_contain_text("cancelled by the customer")
    assert client.get(job_id)["status"] == "CANCELLED"


def test_filter_by_status_function_and_name(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    done = client.submit("pi", {"digits": 10}, name="alpha done")["job_id"]
    stopped = client.submit("word-count", {"text": "x", "pause_seconds": 300}, name="beta stopped")["job_id"]
    client.cancel(stopped)
    wait_for(client, done, "SUCCEEDED")
    page = console.sign_in(key).page
    rows = page.locator("#jobs-body tr")
    expect(rows).to_have_count(2)

    page.select_option("#filter-status", "CANCELLED")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", stopped)

    page.select_option("#filter-status", "")
    page.select_option("#filter-function", "pi")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", done)

    page.select_option("#filter-function", "")
    page.fill("#filter-name", "beta")
    page.press("#filter-name", "Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", stopped)

    page.fill("#filter-name", "gamma")
    page.press("#filter-name", "Enter")
    expect(rows).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()


def test_problems_are_shown_on_the_field_they_name(console: Console, key: str) -> None:
    page = console.sign_in(key).page
    digits = page.locator("#field-params-digits")
    problem = page.locator("#field-params-digits-error")
    fill_form(console, "pi", {"digits": "many"}, "bad")
    posted = len([r for r in console.requests if r.method == "POST"])

    page.click("#submit-button")  # the schema's own rule, checked in the page: nothing is sent
    expect(problem).to_have_text("must be a whole number")
    expect(digits).to_have_attribute("aria-invalid", "true")
    expect(digits).to_be_focused()
    assert len([r for r in console.requests if r.method == "POST"]) == posted

    digits.fill("0")
    page.click("#submit-button")
    expect(problem).to_have_text("must be at least 1")

    digits.fill("50000000")  # over this deployment's limit, which the form knows from GET /functions
    page.click("#submit-button")
    expect(problem).to_have_text("must be at most 10,000,000")
    expect(digits).to_have_attribute("aria-invalid", "true")
    assert len([r for r in console.requests if r.method == "POST"]) == posted  # said before sending
    console.screenshot("submit-error")

    digits.fill("20")
    page.fill("#field-cost_center", "no spaces allowed")
    page.click("#submit-button")
    expect(page.locator("#field-cost_center-error")).not_to_be_empty()
    expect(problem).to_be_empty()


def _tab_to(page: Any, selector: str, *, backwards: bool = False, presses: int = 30) -> None:
    """Tab (or Shift+Tab) until ``selector`` has the focus, failing after ``presses``; the focus shows."""
    for _ in range(presses):
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"{selector} has the focus but shows no outline"
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"{selector} was not reached with {'Shift+Tab' if backwards else 'Tab'}")


def test_the_console_works_from_the_keyboard_alone(console: Console, key: str) -> None:
    page = console.open().page
    keyboard = page.keyboard
    expect(page.locator("#api-key")).to_be_focused()
    keyboard.type(key)
    keyboard.press("Enter")
    expect(page.locator("#view-jobs")).to_be_visible()

    _tab_to(page, "#view-jobs .heading a")  # "New job"
    keyboard.press("Enter")
    expect(page.locator("#field-params-digits")).to_be_visible()  # the form, built from GET /functions
    _tab_to(page, "#submit-function")
    keyboard.press("Tab")  # pi is first: its one field next
    expect(page.locator("#field-params-digits")).to_be_focused()
    keyboard.type("300")
    _tab_to(page, "#field-name")
    keyboard.type("typed, not clicked")
    _tab_to(page, "#submit-button")
    keyboard.press("Enter")

    expect(page.locator("#detail-status")).to_have_text("SUCCEEDED")
    expect(page.locator("#detail-title")).to_be_focused()
    _tab_to(page, "#detail-resubmit")
    keyboard.press("Enter")  # submit again: the same parameters, filled in
    expect(page.locator("#field-params-digits")).to_have_value("300")
    expect(page.locator("#field-name")).to_have_value("typed, not clicked")

    _tab_to(page, "#nav-jobs", backwards=True)
    keyboard.press("Enter")
    expect(page.locator("#jobs-body a")).to_have_text("typed, not clicked")
    _tab_to(page, "#jobs-body a")
    keyboard.press("Enter")
    expect(page.locator("#detail-title")).to_have_text("typed, not clicked")


def test_a_phone_sized_screen_needs_no_sideways_scrolling(console: Console, key: str) -> None:
    PijobsClient(console.stack.api_url, key).submit(
        "pi", {"digits": 10}, name="small screen", cost_center="cc-1"
    )
    page = console.page
    page.set_viewport_size({"width": 360, "height": 740})
    console.sign_in(key)
    expect(page.locator("#jobs-body tr")).to_have_count(1)

    for view in ("#/jobs", "#/submit", "#/webhooks"):
        page.evaluate("h => { location.hash = h; }", view)
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, view
    page.evaluate("() => { location.hash = '#/jobs'; }")
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    page.screenshot(path=str(console.artifacts / "jobs-360px.png"), full_page=True)


def test_names_and_errors_are_text_and_failed_attempts_are_listed(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    markup = '<img src=x onerror="window.owned=1"><b>bold</b>'
    job_id = client.submit("pi", {"digits": 10}, name=markup)["job_id"]
    wait_for(client, job_id, "SUCCEEDED")
    # What the reaper records when an attempt's infrastructure fails (shared/attempts.py), written here
    # directly: a really lost instance would take the reaper's timeouts to show.
    entry = {"attempt": {"N": "1"}, "code": {"S": "worker_lost"}, "at": {"S": "2026-01-02T03:04:05Z"}}
    entry["message"] = {"S": "the instance stopped <i>answering</i>"}
    console.stack.client("dynamodb").update_item(
        TableName=console.stack.outputs["TableName"],
        Key={"pk": {"S": job_key(job_id)}},
        UpdateExpression="SET history = :history, attempts = :attempts",
        ExpressionAttributeValues={":history": {"L": [{"M": entry}]}, ":attempts": {"N": "2"}},
    )
    page = console.sign_in(key).page

    link = page.locator(f'#jobs-body a[data-job-id="{job_id}"]')
    expect(link).to_have_text(markup)
    link.click()
    expect(page.locator("#detail-title")).to_have_text(markup)
    expect(page.locator("#detail-attempts")).to_have_text("Attempts: 2")
    history = page.locator("#detail-history li")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("Attempt 1: worker_lost — the instance stopped <i>answering</i>")
    assert page.locator("main img, main b, main i").count() == 0  # text, never markup
    assert page.evaluate("window.owned") is None


def test_pages_of_twenty_newest_first(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    ids = []
    for n in range(21):  # cancelled at once: a page's worth of jobs without running them
        ids.append(client.submit("pi", {"digits": 10 + n}, name=f"job {n:02d}")["job_id"])
        client.cancel(ids[-1])
    page = console.sign_in(key).page
    rows = page.locator("#jobs-body tr")

    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-job-id", ids[-1])
    expect(page.locator("#page-newer")).to_be_disabled()
    page.click("#page-older")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", ids[0])
    expect(page.locator("#page-older")).to_be_disabled()
    expect(page.locator("#page-label")).to_have_text("Page 2")
    page.click("#page-newer")
    expect(rows).to_have_count(20)
    expect(rows.last).to_have_attribute("data-job-id", ids[1])


def test_a_link_to_a_job_opens_it_once_signed_in(console: Console, key: str) -> None:
    job_id = PijobsClient(console.stack.api_url, key).submit("pi", {"digits": 10}, name="linked")["job_id"]
    page = console.page
    page.goto(f"{console.url}#/jobs/{job_id}")
    expect(page.locator("#view-signin")).to_be_visible()

    page.fill("#api-key", key)
    page.press("#api-key", "Enter")

    expect(page.locator("#detail-title")).to_have_text("linked")
    assert page.url.endswith(f"/console#/jobs/{job_id}")


def test_a_picked_file_is_uploaded_with_progress_checked_and_queried(
    console: Console, key: str, tmp_path: Path
) -> None:
    csv = tmp_path / "sales.csv"
    csv.write_text("city,amount\n" + "".join(f"city{i},{i}\n" for i in range(2000)))
    page = console.sign_in(key).page
    fill_form(console, "sql", {"query": "SELECT count(*) AS n FROM t"}, "a picked file")
    row = page.locator(".input-row").first
    row.get_by_label("Name").fill("t")
    expect(row.get_by_label("File", exact=True)).to_have_value("")  # a new file, no upload chosen

    row.get_by_label("New file").set_input_files(str(csv))

    bar = row.locator("progress")
    expect(row.locator(".upload-state")).to_have_text("AVAILABLE")
    expect(bar).to_have_js_property("value", 100)
    expect(page.locator(f"#{bar.get_attribute('aria-labelledby')}")).to_have_text("100 %")
    console.screenshot("submit-inputs")
    (upload,) = PijobsClient(console.stack.api_url, key).list_uploads()["uploads"]
    assert upload["status"] == "AVAILABLE" and upload["filename"] == "sales.csv"
    assert upload["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    stack = console.stack
    posted = [r for r in console.requests if r.method == "POST" and not r.url.startswith(stack.api_url)]
    assert [r.url for r in posted] == [f"{stack.aws_endpoint}/{stack.outputs['ResultsBucket']}"]
    assert all("x-api-key" not in r.headers for r in posted)  # the key goes to the API only

    page.click("#submit-button")

    expect(page.locator("#view-detail")).to_be_visible()
    expect(page.locator("#detail-status")).to_have_text("SUCCEEDED")
    job = PijobsClient(console.stack.api_url, key).get(page.url.rsplit("/", 1)[-1])
    assert job["params"]["inputs"] == {"t": upload["upload_id"]}
    assert job["result"]["metadata"]["rows"] == 1


def test_an_upload_the_api_refuses_is_shown_on_its_row(console: Console, key: str, tmp_path: Path) -> None:
    client = PijobsClient(console.stack.api_url, key)
    csv = tmp_path / "gone.csv"
    csv.write_text("a\n1\n")
    upload = client.upload_file(csv)
    page = console.sign_in(key).page
    fill_form(console, "sql", {"query": "SELECT * FROM t"}, "a deleted input")
    row = page.locator(".input-row").first
    row.get_by_label("Name").fill("t")
    row.get_by_label("File", exact=True).select_option(upload["upload_id"])  # one of the caller's uploads
    expect(row.get_by_label("New file")).to_be_hidden()
    client.delete_upload(upload["upload_id"])  # gone before the job is submitted

    page.click("#submit-button")

    problem = row.locator(".error")
    expect(problem).to_have_text(NOT_FOUND)
    expect(row.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    expect(row.get_by_label("Name")).to_be_focused()
    expect(page.locator("#submit-error")).to_contain_text("The API refused the job")
    assert client.list_jobs()["jobs"] == []


def test_the_bucket_lets_the_console_origin_post_and_no_other(console: Console) -> None:
    """The browser asks first (a preflight: the upload's progress events make it one); the local stack put
    the template's CORS rule on the bucket, so another origin is refused (moto allows all without rules)."""
    stack = console.stack
    bucket = f"{stack.aws_endpoint}/{stack.outputs['ResultsBucket']}"

    def preflight(origin: str, method: str = "POST") -> requests.Response:
        headers = {"Origin": origin, "Access-Control-Request-Method": method}
        return requests.options(bucket, headers=headers, timeout=10)

    allowed = preflight(stack.api_url)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == stack.api_url
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    assert preflight("https://elsewhere.example").status_code == 403


def test_a_rejected_file_shows_why_on_its_row_and_no_job_is_sent(
    console: Console, key: str, tmp_path: Path
) -> None:
    """The declared sha256 is changed on its way to POST /uploads (as if the file changed after it was
    read): pijobs checks what arrived, REJECTS it, and the reason is shown on the row."""
    csv = tmp_path / "changed.csv"
    csv.write_text("a\n1\n")
    page = console.sign_in(key).page

    def declare_another_sha256(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = {**json.loads(route.request.post_data or "{}"), "sha256": "0" * 64}
        route.continue_(post_data=json.dumps(body))

    page.route("**/uploads", declare_another_sha256)
    fill_form(console, "sql", {"query": "SELECT * FROM t"}, "a rejected input")
    row = page.locator(".input-row").first
    row.get_by_label("Name").fill("t")
    row.get_by_label("New file").set_input_files(str(csv))

    expect(row.locator(".upload-state")).to_have_text("REJECTED")
    expect(row.locator(".error")).to_contain_text("checksum mismatch")
    page.click("#submit-button")

    expect(page.locator("#submit-error")).to_have_text("An input needs a change (marked below).")
    expect(row.locator(".error")).to_contain_text("checksum mismatch")
    expect(row.get_by_label("Name")).to_be_focused()
    assert not [r for r in console.requests if r.method == "POST" and r.url.endswith("/jobs")]


def test_a_job_reads_as_a_person_reads_it_its_input_files_result_columns_and_why_it_failed(
    console: Console, key: str, tmp_path: Path
) -> None:
    client = PijobsClient(console.stack.api_url, key)
    scores = tmp_path / "scores.csv"
    scores.write_text("team,points\nred,3\nblue,5\nred,4\n")
    upload_id = client.upload_file(scores)["upload_id"]
    inputs = {"s": upload_id}
    query = "SELECT team, sum(points) AS points FROM s GROUP BY team ORDER BY team"
    ok = client.submit("sql", {"query": query, "inputs": inputs, "format": "parquet"})["job_id"]
    bad = client.submit("sql", {"query": "SELECT nothing FROM s", "inputs": inputs})["job_id"]
    wait_for(client, ok, "SUCCEEDED")
    failed = wait_for(client, bad, "FAILED")
    page = console.sign_in(key).page

    page.goto(f"{console.url}#/jobs/{ok}")
    expect(page.locator("#detail-params")).to_contain_text("s: scores.csv (31 bytes)")  # not the upload id
    columns = page.locator("#detail-columns tbody tr")
    expect(columns).to_have_count(2)
    expect(columns.nth(0).locator("td")).to_have_text(["team", "VARCHAR"])
    expect(columns.nth(1).locator("td")).to_have_text(["points", "BIGINT"])
    expect(page.locator("#detail-result")).to_contain_text("rows2")
    expect(page.locator("#detail-result")).not_to_contain_text('"name"')  # no raw JSON
    expect(page.locator("#detail-failure")).to_be_hidden()
    console.screenshot("detail-table-result")

    page.goto(f"{console.url}#/jobs/{bad}")
    expect(page.locator("#detail-failure-title")).to_have_text("This job failed")
    expect(page.locator("#detail-failure-message")).to_have_text(failed["error"]["message"])
    expect(page.locator("#detail-failure-code")).to_have_text(f"Error code: {failed['error']['code']}")
    expect(page.locator("#detail-timeline")).not_to_contain_text(failed["error"]["code"])  # said once, on top
    console.screenshot("detail-failed")


def test_a_running_job_shows_when_it_should_finish(console: Console, key: str) -> None:
    client = PijobsClient(console.stack.api_url, key)
    body = {"text": "to be or not to be", "pause_seconds": 15}  # long enough for the poller to see it run
    job_id = client.submit("word-count", body, name="slow count")["job_id"]
    page = console.sign_in(key).page
    page.goto(f"{console.url}#/jobs/{job_id}")  # at once: the jobs view, still loading, must not take over

    expect(page.locator("#detail-progress-label")).to_contain_text("left (done by ")
    expect(page.locator("#detail-status")).to_have_text("SUCCEEDED")
    expect(page.locator("#detail-progress-label")).to_have_text("100 %")  # no estimate once it ended


SLICE_BYTES = 4 * 1024 * 1024  # console.js's HASH_SLICE_BYTES: what the tab reads of a file at a time


def test_a_file_is_hashed_a_slice_at_a_time_as_python_hashes_it(
    console: Console, key: str, tmp_path: Path
) -> None:
    """The sha256 the console declares for a file (POST /uploads, held back here) is hashlib's, for files on
    either side of SHA-256's block and padding sizes and for one read in several slices."""
    sizes = [0, 1, 55, 56, 64, 65, 2 * SLICE_BYTES + 3]
    page = console.sign_in(key).page
    page.route(
        "**/uploads", lambda route: route.abort() if route.request.method == "POST" else route.continue_()
    )
    fill_form(console, "sql", {"query": "SELECT 1"}, "hashes only")
    row = page.locator(".input-row").first

    declared = {}
    for size in sizes:
        path = tmp_path / f"{size}.bin"
        path.write_bytes(os.urandom(size))
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/uploads")) as posted:
            row.get_by_label("New file").set_input_files(str(path))
        declared[size] = (
            posted.value.post_data_json["sha256"],
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )

    assert {size: mine for size, (mine, _) in declared.items()} == {
        size: python for size, (_, python) in declared.items()
    }


def test_a_file_of_several_slices_shows_its_reading_then_uploads_and_is_available(
    console: Console, key: str, tmp_path: Path
) -> None:
    data = tmp_path / "several-slices.bin"
    data.write_bytes(os.urandom(2 * SLICE_BYTES + SLICE_BYTES // 2 + 5))  # read as 40 %, 80 %, 100 %
    page = console.sign_in(key).page
    fill_form(console, "sql", {"query": "SELECT 1"}, "a large file")
    row = page.locator(".input-row").first
    label = row.locator(".progress-line span").first.get_attribute("id")
    # What the row says at each change of its progress label: the state and the percentage.
    page.evaluate(
        """(id) => {
            window.progressSeen = [];
            const label = document.getElementById(id);
            const state = label.nextElementSibling;
            new MutationObserver(() => window.progressSeen.push(`${state.textContent} ${label.textContent}`))
                .observe(label, { childList: true, characterData: true, subtree: true });
        }""",
        label,
    )

    row.get_by_label("New file").set_input_files(str(data))

    expect(row.locator(".upload-state")).to_have_text("AVAILABLE", timeout=120_000)
    seen = page.evaluate("window.progressSeen")
    reading = [entry for entry in seen if entry.startswith("reading")]
    assert reading[-3:] == ["reading 40 %", "reading 80 %", "reading 100 %"], seen
    assert seen.index("reading 100 %") < next(i for i, e in enumerate(seen) if e.startswith("sending")), seen
    (upload,) = PijobsClient(console.stack.api_url, key).list_uploads()["uploads"]
    assert upload["bytes"] == data.stat().st_size
    assert upload["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
