"""The operations console, driven as an operator would: a customer is turned away, the admin finds a
saga stuck on a dead-lettered payment, fixes the gateway and replays the letter from the page, reads
the saga definition and the fleet, cancels a held order, and discards a letter with a reason.

Run by the Swift test BrowserJourneyTests after the storefront journey, against the same fleet.
"""

import sys
import time
import uuid

from selenium.webdriver.common.by import By

import harness
from harness import api, click, element, elements, expect, fill, screenshot, wait_for, wait_text

CONSOLE = harness.WEB + "/console"
ADMIN_EMAIL = harness.env("SHOPFLEET_ADMIN_EMAIL")
ADMIN_PASSWORD = harness.env("SHOPFLEET_ADMIN_PASSWORD")
ADDRESS = {"name": "Ada Operator", "line1": "1 Queue Street", "postalCode": "N1 9GU", "city": "London", "country": "GB"}
AUTHORIZE = "payments.AuthorizePayment.v1"


# --- the API, for what the journey sets up and checks behind the page -------------------------

class Customer:
    """A customer registered through the API, who places orders of one mug."""

    def __init__(self):
        self.email = f"console-{uuid.uuid4().hex[:12]}@example.com"
        self.password = "console-journey-" + uuid.uuid4().hex[:8]
        status, body, _ = api("POST", "/v1/auth/register", {"email": self.email, "password": self.password, "name": "Console Customer"})
        expect(status == 201, f"registering {self.email} answered {status}: {body}")
        self.token = harness.login(self.email, self.password)

    def call(self, method, path, body=None, headers=None):
        status, answer, answer_headers = api(method, path, body, token=self.token, headers=headers)
        if status == 401:  # the access token expired during a long run
            self.token = harness.login(self.email, self.password)
            status, answer, answer_headers = api(method, path, body, token=self.token, headers=headers)
        return status, answer, answer_headers

    def place_order(self):
        status, body, _ = self.call("PUT", "/v1/cart/lines/p-mug", {"quantity": 1})
        expect(status == 200, f"putting a mug in the cart answered {status}: {body}")
        status, body, _ = self.call("POST", "/v1/orders", {"paymentMethod": "pm_card_visa", "shippingAddress": ADDRESS},
                                    headers={"Idempotency-Key": str(uuid.uuid4())})
        expect(status == 202, f"placing an order answered {status}: {body}")
        return body["orderId"]

    def order_status(self, order_id):
        status, body, _ = self.call("GET", f"/v1/orders/{order_id}")
        return body.get("status") if status == 200 and isinstance(body, dict) else None


class Admin:
    def __init__(self):
        self.token = harness.login(ADMIN_EMAIL, ADMIN_PASSWORD)

    def get(self, path, missing_ok=False):
        status, body, _ = api("GET", path, token=self.token)
        if status == 401:
            self.token = harness.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            status, body, _ = api("GET", path, token=self.token)
        if status == 404 and missing_ok:
            return None
        expect(status == 200, f"GET {path} answered {status}: {body}")
        return body

    def waiting_letter(self, saga_id, deadline=60):
        """The saga's waiting AuthorizePayment letter, once the fleet dead-lettered it."""
        def found():
            items = self.get(f"/v1/admin/dead-letters?saga={saga_id}&status=waiting")["items"]
            return next((letter for letter in items if letter["type"] == AUTHORIZE), None)
        return wait_for(f"the {AUTHORIZE} of order {saga_id} to be dead-lettered", found, deadline, every=0.5)

    def saga_state(self, saga_id):
        """The saga's state; None until the orders service has started it."""
        view = self.get(f"/v1/admin/sagas/{saga_id}", missing_ok=True)
        return view["saga"]["state"] if view else None


# --- the page ---------------------------------------------------------------------------------

def text(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def wait_page(driver, what, condition, deadline, refresh_css, every=3.0):
    """Waits for `condition`, pressing the page's own Refresh button (`refresh_css`) every few
    seconds: the page follows a change for a while by itself, this covers a slower fleet."""
    last = [time.monotonic()]

    def check():
        value = condition()
        if not value and time.monotonic() - last[0] > every:
            last[0] = time.monotonic()
            buttons = driver.find_elements(By.CSS_SELECTOR, refresh_css)
            if buttons and buttons[0].is_displayed() and buttons[0].is_enabled():
                buttons[0].click()
        return value
    return wait_for(what, check, deadline, every=0.2)


def open_view(driver, hash_route, ready_css):
    driver.get(CONSOLE + hash_route)
    return element(driver, ready_css)


def sign_in(driver, email_address, password):
    fill(driver, "#login-email", email_address)
    fill(driver, "#login-password", password)
    click(driver, "#login-go")


def phone_viewport(driver, width=375, height=800):
    """Headless Chromium keeps a window at least 500 px wide whatever --window-size says; the
    device metrics override gives the page a real 375 px viewport."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})


def request_cancel(driver, why):
    """Cancels the saga on the page through its confirmation; returns the reason given."""
    reason = f"operator cancel {uuid.uuid4().hex[:8]}: {why}"
    click(driver, "#saga-cancel")
    fill(driver, "#action-reason", reason)
    click(driver, "#action-confirm")
    wait_text(driver, "#action-result", "requested")
    return reason


def expect_cancelled(driver, saga_id, reason):
    wait_page(driver, f"saga {saga_id} to be cancelled", lambda: text(driver, "#saga-state-now") == "cancelled", 60, "#saga-refresh")
    steps = [row.text for row in elements(driver, '[data-test="saga-step"]')]
    expect(any(reason in step for step in steps), f"the timeline of {saga_id} does not show the reason {reason!r}: {steps}")


def find_the_stuck_order(driver, stuck_order, letter):
    """Step 3: the operator finds the order through Stuck, the saga, the dead letters, the letter."""
    letter_id = letter["id"]
    open_view(driver, "#/stuck", "#stuck-older")
    fill(driver, "#stuck-older", "1s")
    click(driver, "#stuck-go")
    row_css = f'[data-test="stuck-row"][data-saga="{stuck_order}"]'
    wait_page(driver, f"order {stuck_order} among the stuck sagas", lambda: elements(driver, row_css), 30, "#stuck-go")
    reason = text(driver, f'{row_css} [data-test="stuck-reason"]')
    letters = text(driver, f'{row_css} [data-test="stuck-letters"]')
    expect(reason.strip() != "", f"the stuck saga shows no reason: {text(driver, row_css)!r}")
    expect(letters.startswith("1"), f"the stuck saga shows {letters!r} dead letters, expected 1")
    screenshot(driver, "console-stuck")

    element(driver, f"{row_css} a[href^='#/sagas/']").click()
    wait_text(driver, "#saga-state-now", "authorizing_payment")
    wait_for("the saga's timeline", lambda: len(elements(driver, '[data-test="saga-step"]')) >= 3)
    letter_row = f'[data-test="saga-letter"][data-letter="{letter_id}"]'
    element(driver, letter_row)
    expect(AUTHORIZE in text(driver, letter_row), f"the timeline's letter row says {text(driver, letter_row)!r}")
    screenshot(driver, "console-saga")

    click(driver, "#tab-dead-letters")
    group_css = f'[data-test="dl-group"][data-fingerprint="{letter["fingerprint"]}"]'
    element(driver, group_css)
    group = text(driver, group_css)
    for part in (AUTHORIZE, letter["failedQueue"], letter["errorType"]):
        expect(part in group, f"the group does not show {part!r}: {group!r}")
    screenshot(driver, "console-dead-letters")

    click(driver, f'{group_css} [data-test="dl-group-list"]')
    # The list is drawn again for the fingerprint: wait for that drawing before clicking in it.
    wait_for("the letters of the group", lambda: element(driver, "#dl-fingerprint").get_attribute("value") == letter["fingerprint"]
             and elements(driver, f'[data-test="dl-letter"][data-letter="{letter_id}"]'))
    click(driver, f'[data-test="dl-letter"][data-letter="{letter_id}"] td:first-child a')
    wait_text(driver, "#dl-status", "waiting")
    wait_for("the letter's body", lambda: text(driver, "#dl-body").strip() != "")
    expect("x-error" in text(driver, "#dl-headers"), f"the letter's headers show no x-error: {text(driver, '#dl-headers')!r}")
    driver.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -60)", element(driver, "#dl-headers"))
    screenshot(driver, "console-letter")
    driver.execute_script("window.scrollTo(0, 0)")


# --- the journey ------------------------------------------------------------------------------

def journey(new_browser):
    admin = Admin()
    customer = Customer()
    driver = new_browser()

    # 1. A customer is turned away; the admin gets in.
    driver.get(CONSOLE)
    sign_in(driver, customer.email, customer.password)
    wait_text(driver, "#login-problem[role=alert]", "not an admin")
    expect(not elements(driver, "#tabs")[0].is_displayed(), "the console's tabs are shown to a customer")
    sign_in(driver, ADMIN_EMAIL, ADMIN_PASSWORD)
    wait_text(driver, "#whoami", ADMIN_EMAIL)
    element(driver, "#tabs")

    # 2. A gateway that fails every call: the order's authorization is dead-lettered. (The fleet
    # sends a step again only after 10 minutes, so nothing but the operator moves the saga on.)
    harness.set_payment_faults({"failureRate": 1})
    try:
        stuck_order = customer.place_order()
        letter = admin.waiting_letter(stuck_order)
        letter_id = letter["id"]
        # 3. The operator finds it while the gateway is still broken.
        find_the_stuck_order(driver, stuck_order, letter)
    finally:
        harness.set_payment_faults({})

    # 4. The gateway is fixed; replay from the console: the dry run lists exactly that letter,
    # then it goes at 5 a second.
    click(driver, "#replay-preview")
    wait_for("the replay's dry run", lambda: elements(driver, '[data-test="replay-item"]'))
    previewed = [row.get_attribute("data-letter") for row in elements(driver, '[data-test="replay-item"]')]
    expect(previewed == [letter_id], f"the dry run lists {previewed}, expected only {letter_id}")
    fill(driver, "#replay-rate", "5")
    wait_text(driver, "#replay-confirm", "Replay 1 letter")
    click(driver, "#replay-confirm")
    wait_text(driver, "#dl-action-result", "requested")
    wait_page(driver, "the letter to be replayed", lambda: text(driver, "#dl-status") == "replayed", 60, "#dl-refresh")

    open_view(driver, f"#/sagas/{stuck_order}", "#saga-state-now")
    wait_page(driver, f"saga {stuck_order} to complete", lambda: text(driver, "#saga-state-now") == "completed", 60, "#saga-refresh")
    wait_for(f"order {stuck_order} to be completed through the API", lambda: customer.order_status(stuck_order) == "completed", 30, every=0.5)

    # 5. The saga definition and the fleet.
    click(driver, "#tab-definition")
    definition = admin.get("/v1/admin/sagas/definition")
    element(driver, "#saga-diagram")
    boxes = len(elements(driver, '#saga-diagram [data-test="diagram-state"] rect'))
    expect(boxes >= len(definition["states"]), f"the diagram draws {boxes} state boxes for {len(definition['states'])} states")
    expect(elements(driver, "svg#saga-diagram"), "the diagram is not an svg")
    screenshot(driver, "console-definition")

    click(driver, "#tab-fleet")
    queue_css = '[data-test="queue-row"][data-queue="orders.commands"]'
    element(driver, queue_css)
    consumers = int(text(driver, f'{queue_css} [data-test="queue-consumers"]') or 0)
    expect(consumers > 0, f"orders.commands shows {consumers} consumers")
    expect(len(elements(driver, '[data-test="worker-row"]')) > 0, "the fleet lists no worker")
    screenshot(driver, "console-fleet")

    # 6. An operator cancels an order whose authorization the gateway holds.
    harness.set_payment_faults({"hold": True})
    try:
        held_order = customer.place_order()
        wait_for(f"saga {held_order} to wait for its authorization",
                 lambda: admin.saga_state(held_order) == "authorizing_payment", 30, every=0.5)
        open_view(driver, f"#/sagas/{held_order}", "#saga-state-now")
        wait_text(driver, "#saga-state-now", "authorizing_payment")
        cancel_reason = request_cancel(driver, "the customer phoned")
    finally:
        harness.set_payment_faults({})
    expect_cancelled(driver, held_order, cancel_reason)

    # 7. Another letter, discarded with a reason.
    harness.set_payment_faults({"failureRate": 1})
    try:
        discarded_order = customer.place_order()
        doomed = admin.waiting_letter(discarded_order)
    finally:
        harness.set_payment_faults({})
    open_view(driver, f"#/dead-letters/{doomed['id']}", "#dl-status")
    wait_text(driver, "#dl-status", "waiting")
    discard_reason = f"journey {uuid.uuid4().hex[:8]}: a test order, not a customer's"
    click(driver, "#discard-open")
    fill(driver, "#discard-reason", discard_reason)
    click(driver, "#discard-confirm")
    wait_page(driver, "the letter to be discarded", lambda: text(driver, "#dl-status") == "discarded", 30, "#dl-refresh")
    wait_text(driver, "#dl-note", discard_reason)
    # Its order will not be paid: the operator cancels it from the letter's saga, so that no saga
    # is left open and no stock reserved.
    click(driver, '#dl-facts a[href^="#/sagas/"]')
    wait_text(driver, "#saga-state-now", "authorizing_payment")
    expect_cancelled(driver, discarded_order, request_cancel(driver, "its payment letter was discarded"))

    # 8. The console at phone width: no horizontal scrolling (tables scroll in their own box).
    phone = new_browser(width=375, height=800)
    phone_viewport(phone)
    phone.get(CONSOLE)
    viewport = phone.execute_script("return window.innerWidth")
    expect(viewport == 375, f"the phone's viewport is {viewport} px wide, not 375")
    sign_in(phone, ADMIN_EMAIL, ADMIN_PASSWORD)
    wait_text(phone, "#whoami", ADMIN_EMAIL)
    for route, ready in ((f"#/sagas/{stuck_order}", '[data-test="saga-step"]'), ("#/dead-letters", "#dl-letters table, #dl-letters .empty"),
                         ("#/sagas", '[data-test="saga-row"]')):
        open_view(phone, route, ready)
        width = phone.execute_script("return document.documentElement.scrollWidth")
        expect(width <= 375, f"{route} is {width} px wide at 375 px")
    screenshot(phone, "console-phone")

    for browser in (driver, phone):
        errors = harness.console_errors(browser)
        expect(errors == [], f"the console logged errors: {errors}")


sys.exit(harness.run(journey))
