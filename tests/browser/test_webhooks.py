"""The console's Webhooks page as a customer uses it, in headless Chromium against the embedded stack: add a
webhook pointing at a receiver on 127.0.0.1 and see its secret once, send a test event and watch its delivery
succeed (the receiver checks the signature with the independent ``standardwebhooks`` package, keyed with the
secret the page showed), rotate the secret, see a refused URL at the field, delete."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook as StandardWebhook

from pijobs.client import ApiError, PijobsClient
from pijobs.shared.webhooks import ALL_EVENT_TYPES, TEST_EVENT_TYPE
from tests.browser.conftest import Console
from tests.e2e.test_webhooks import Receiver

playwright = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (tox -e browser installs it)"
)
expect = playwright.expect
pytestmark = pytest.mark.browser


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


def received(receiver: Receiver, event_id: str, timeout: float = 30) -> tuple[dict[str, str], bytes]:
    """The (headers, body) of the first request the receiver got for ``event_id``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in list(receiver.requests) if r[0].get("webhook-id") == event_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{event_id} never reached the receiver"
        time.sleep(0.1)


def open_webhooks(console: Console, key: str) -> Any:
    page = console.sign_in(key).page
    page.click("#nav-webhooks")
    expect(page.locator("#view-webhooks")).to_be_visible()
    expect(page.locator("#nav-webhooks")).to_have_attribute("aria-current", "page")
    return page


def test_add_a_webhook_see_its_secret_once_test_it_rotate_it_and_delete_it(
    console: Console, key: str, receiver: Receiver
) -> None:
    client = PijobsClient(console.stack.api_url, key)
    page = open_webhooks(console, key)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.stack.api_url)
    # The choices are the API's event types (read from its OpenAPI document), all of them ticked.
    choices = page.locator("#webhook-events-choices input[type=checkbox]")
    expect(choices).to_have_count(len(ALL_EVENT_TYPES))
    assert sorted(choices.evaluate_all("boxes => boxes.map(b => b.value)")) == sorted(ALL_EVENT_TYPES)
    assert all(choices.evaluate_all("boxes => boxes.map(b => b.checked)"))
    expect(page.locator("#webhooks-empty")).to_be_visible()

    markup = '<img src=x onerror="window.owned=1"> CI <b>hook</b>'
    page.fill("#webhook-url", receiver.url)
    page.get_by_label("job.running").uncheck()
    page.fill("#webhook-description", markup)
    page.click("#webhook-add")

    box = page.locator("#secret-box")
    expect(box).to_be_visible()
    expect(page.locator("#secret-warning")).to_contain_text("you will not see it again")
    expect(page.locator("#secret-value")).to_be_focused()
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("whsec_")
    page.click("#secret-copy")
    expect(page.locator("#secret-copied")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    console.screenshot("webhooks-secret")

    (hook,) = client.list_webhooks()["webhooks"]
    assert hook["url"] == receiver.url and hook["description"] == markup
    assert hook["events"] == sorted(set(ALL_EVENT_TYPES) - {"job.running"})
    row = page.locator(f'#webhooks-body tr[data-webhook-id="{hook["webhook_id"]}"]')
    expect(row.locator("a")).to_have_text(receiver.url)
    expect(row).to_contain_text(markup)  # the customer's text, as text
    expect(row.locator(".badge")).to_have_text("active")
    expect(row).to_contain_text("job.cancelled, job.failed, job.provisioning, job.retrying")
    assert page.locator("main img, main b").count() == 0 and page.evaluate("window.owned") is None

    row.locator("a").click()  # another view: the secret is gone from the page for good
    expect(page.locator("#webhook-title")).to_have_text(receiver.url)
    expect(box).to_be_hidden()
    assert secret not in page.content()
    expect(page.locator("#webhook-state")).to_have_text("active")
    expect(page.locator("#webhook-about")).to_have_text(markup)
    expect(page.locator("#deliveries-empty")).to_be_visible()

    page.click("#webhook-test")

    delivery = page.locator("#deliveries-body tr")
    expect(delivery).to_have_count(1)
    expect(delivery.locator(".badge")).to_have_text("delivered")
    expect(delivery.locator(".type")).to_have_text(TEST_EVENT_TYPE)
    expect(delivery.locator(".answer")).to_have_text("204")
    expect(delivery.locator(".tries")).to_have_text("1")
    expect(delivery.locator(".duration")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(delivery.locator(".next")).to_be_empty()
    event_id = delivery.get_attribute("data-event-id")
    expect(page.locator("#notice")).to_contain_text(event_id)
    headers, body = received(receiver, event_id)
    payload = StandardWebhook(secret).verify(body, headers)  # signed with the secret the page showed
    assert payload["type"] == TEST_EVENT_TYPE and payload["data"]["webhook_id"] == hook["webhook_id"]
    console.screenshot("webhook-deliveries")

    page.click("#webhook-rotate")
    expect(box).to_be_visible()
    expect(page.locator("#secret-title")).to_have_text("New signing secret")
    expect(page.locator("#secret-note")).to_contain_text("The previous secret also signs until")
    new_secret = page.locator("#secret-value").input_value()
    assert new_secret.startswith("whsec_") and new_secret != secret
    page.click("#secret-done")
    expect(box).to_be_hidden()
    assert new_secret not in page.content()
    page.click("#webhook-test")
    expect(delivery).to_have_count(2)
    newest = delivery.first
    expect(newest.locator(".badge")).to_have_text("delivered")
    headers, body = received(receiver, newest.get_attribute("data-event-id"))
    assert StandardWebhook(new_secret).verify(body, headers)["type"] == TEST_EVENT_TYPE
    assert StandardWebhook(secret).verify(body, headers)  # the old one too, for the grace period

    page.click("#webhook-delete")  # changing one's mind first: Escape keeps it
    expect(page.locator("#confirm-delete")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#confirm-delete")).to_be_hidden()
    assert client.get_webhook(hook["webhook_id"])["url"] == receiver.url
    page.click("#webhook-delete")
    page.click("#confirm-delete-yes")

    expect(page.locator("#view-webhooks")).to_be_visible()
    expect(page.locator("#notice")).to_have_text(f"The webhook to {receiver.url} was deleted.")
    expect(page.locator("#webhooks-empty")).to_be_visible()
    with pytest.raises(ApiError) as gone:
        client.get_webhook(hook["webhook_id"])
    assert gone.value.status == 404


def test_a_url_the_api_refuses_is_shown_at_the_url_field(console: Console, key: str) -> None:
    page = open_webhooks(console, key)
    url = page.locator("#webhook-url")
    problem = page.locator("#webhook-url-error")
    posts = lambda: [r for r in console.requests if r.method == "POST"]  # noqa: E731

    page.click("#webhook-add")  # nothing typed: said in the page, nothing sent
    expect(problem).to_have_text("Field required")
    expect(url).to_be_focused()
    assert posts() == []

    url.fill("https://169.254.169.254/latest/meta-data")
    page.click("#webhook-add")

    expect(problem).to_contain_text("the host 169.254.169.254 is a link-local address")
    expect(url).to_have_attribute("aria-invalid", "true")
    expect(url).to_be_focused()
    expect(page.locator("#webhook-form-error")).to_contain_text("The API refused the webhook")
    expect(page.locator("#secret-box")).to_be_hidden()
    (post,) = posts()
    assert post.response().status == 422
    console.screenshot("webhooks-refused")

    url.fill("ftp://example.com/hook")
    for box in page.locator("#webhook-events-choices input").all():
        box.uncheck()
    page.click("#webhook-add")
    expect(page.locator("#webhook-events-error")).to_have_text("choose at least one event type")
    expect(problem).to_be_empty()
    assert len(posts()) == 1
    assert PijobsClient(console.stack.api_url, key).list_webhooks()["webhooks"] == []


def test_a_receiver_that_answers_410_disables_its_webhook(
    console: Console, key: str, receiver: Receiver
) -> None:
    client = PijobsClient(console.stack.api_url, key)
    hook = client.add_webhook(receiver.url, description="going away")
    receiver.answers = [410]
    page = open_webhooks(console, key)
    page.locator(f'a[data-webhook-id="{hook["webhook_id"]}"]').click()
    expect(page.locator("#webhook-state")).to_have_text("active")

    page.click("#webhook-test")

    expect(page.locator("#deliveries-body tr .badge")).to_have_text("gone")
    expect(page.locator("#deliveries-body tr .answer")).to_have_text("410")
    expect(page.locator("#webhook-state")).to_have_text("disabled")
    expect(page.locator("#webhook-problem")).to_contain_text("410 Gone")
    page.click("text=← All webhooks")
    row = page.locator(f'#webhooks-body tr[data-webhook-id="{hook["webhook_id"]}"]')
    expect(row.locator(".badge")).to_have_text("disabled")


def test_a_failed_attempt_shows_its_answer_and_next_retry_until_it_is_delivered(
    console: Console, key: str, receiver: Receiver
) -> None:
    """The embedded stack retries after 1, 2, 4 s: the page, asking again while a delivery is pending, shows
    the failed answer and when the next try is due, then the delivery on its fourth try."""
    hook = PijobsClient(console.stack.api_url, key).add_webhook(receiver.url)
    receiver.answers = [500, 502, 503]
    page = open_webhooks(console, key)
    page.locator(f'a[data-webhook-id="{hook["webhook_id"]}"]').click()
    expect(page.locator("#webhook-state")).to_have_text("active")

    page.click("#webhook-test")

    row = page.locator("#deliveries-body tr")
    expect(row.locator(".badge")).to_have_text("pending")
    expect(row.locator(".answer")).to_have_text(re.compile(r"^50[023]$"))
    expect(row.locator(".next")).not_to_be_empty()
    console.screenshot("webhook-retrying")
    expect(row.locator(".badge")).to_have_text("delivered")
    expect(row.locator(".tries")).to_have_text("4")
    expect(row.locator(".answer")).to_have_text("204")
    expect(row.locator(".next")).to_be_empty()
    assert len(receiver.requests) == 4


def test_a_jobs_events_are_listed_with_the_job_and_its_attempt(
    console: Console, key: str, receiver: Receiver
) -> None:
    client = PijobsClient(console.stack.api_url, key)
    hook = client.add_webhook(receiver.url, events=["job.running", "job.succeeded"])
    job_id = client.submit("pi", {"digits": 10}, name="announced")["job_id"]
    client.wait(job_id, timeout=60)
    deadline = time.monotonic() + 30
    while len(client.webhook_deliveries(hook["webhook_id"])["deliveries"]) < 2:  # the page asks once
        assert time.monotonic() < deadline, "the job's two events were never queued"
        time.sleep(0.1)
    page = open_webhooks(console, key)
    page.locator(f'a[data-webhook-id="{hook["webhook_id"]}"]').click()

    rows = page.locator("#deliveries-body tr")
    expect(rows).to_have_count(2)
    expect(rows.locator(".badge")).to_have_text(["delivered", "delivered"])
    # newest first, and the two events are made side by side (unordered): both are listed
    assert sorted(rows.locator(".type").all_text_contents()) == ["job.running", "job.succeeded"]
    for row in rows.all():
        assert row.get_attribute("data-event-id").startswith(f"evt_{job_id}_1_")
        expect(row).to_contain_text("attempt 1")
    rows.first.locator(f'a[href="#/jobs/{job_id}"]').click()
    expect(page.locator("#detail-title")).to_have_text("announced")


def test_the_webhook_pages_fit_a_phone_sized_screen(console: Console, key: str, receiver: Receiver) -> None:
    client = PijobsClient(console.stack.api_url, key)
    hook = client.add_webhook(receiver.url + "/" + "a-long-path-segment" * 6, description="narrow")
    client.test_webhook(hook["webhook_id"])
    page = console.page
    page.set_viewport_size({"width": 360, "height": 740})
    open_webhooks(console, key)
    expect(page.locator("#webhooks-body tr")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    page.locator(f'a[data-webhook-id="{hook["webhook_id"]}"]').click()
    expect(page.locator("#deliveries-body tr .badge")).to_have_text("delivered")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.screenshot(path=str(console.artifacts / "webhook-360px.png"), full_page=True)
