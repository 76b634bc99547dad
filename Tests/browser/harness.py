"""What the browser journeys share: a headless Chromium (Debian's, driven by its chromedriver),
waits with deadlines, screenshots, the API for checks, and the mail sink.

The journeys are run by the Swift test `BrowserJourneyTests` against a running fleet; it passes
everything in the environment (never in argv, which other users can read):

    SHOPFLEET_WEB_URL           the edge's public base URL, e.g. http://127.0.0.1:18080
    SHOPFLEET_SCREENSHOTS       where screenshots go (a directory)
    SHOPFLEET_MAILDIR           the SMTP sink's maildir (mails are files in <maildir>/new)
    SHOPFLEET_SANDBOX_URL       the payments sandbox, for its faults
    SHOPFLEET_PAYMENTS_API_KEY  the sandbox's key
    SHOPFLEET_ADMIN_EMAIL / SHOPFLEET_ADMIN_PASSWORD   an account with the admin role

A journey is a script that exits 0 when every check held; a failed check raises `JourneyFailure`
with what was expected and what the page showed, after saving a screenshot and the page's console
log next to the others.
"""

import email
import json
import os
import pathlib
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = os.environ.get("SHOPFLEET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SHOPFLEET_CHROMEDRIVER", "/usr/bin/chromedriver")


class JourneyFailure(AssertionError):
    pass


def env(name):
    value = os.environ.get(name)
    if not value:
        raise JourneyFailure(f"{name} is not set: the journeys run from the Swift test BrowserJourneyTests")
    return value


WEB = env("SHOPFLEET_WEB_URL").rstrip("/")
SHOTS = pathlib.Path(env("SHOPFLEET_SCREENSHOTS"))
SHOTS.mkdir(parents=True, exist_ok=True)


def browser(width=1280, height=900):
    """A fresh headless Chromium with its own profile (so its localStorage is its own)."""
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--lang=en-GB"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def wait_for(what, condition, deadline=20.0, every=0.1):
    """Calls `condition` until it returns something truthy (returned) or `deadline` seconds pass
    (then fails, naming `what`). Exceptions of a page that is changing count as not yet."""
    end = time.monotonic() + deadline
    last_error = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (StaleElementReferenceException, WebDriverException, urllib.error.URLError, JourneyFailure) as error:
            # A condition that checks by raising (an inner wait, an answer that is not 200 yet) is
            # "not yet" until the outer deadline; its last word is in the failure.
            last_error = error
        if time.monotonic() > end:
            raise JourneyFailure(f"waited {deadline:.0f} s for {what}" + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(every)


def element(driver, css, deadline=20.0):
    """The first element matching `css` once it is displayed."""
    def shown():
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None
    return wait_for(f"'{css}' on {driver.current_url}", shown, deadline)


def elements(driver, css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def text_of(driver, css, deadline=20.0):
    return element(driver, css, deadline).text


def wait_text(driver, css, expected, deadline=30.0):
    """Waits until the element's text contains `expected`; returns the text."""
    def has():
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found and expected in found[0].text and found[0].text
    return wait_for(f"'{expected}' in '{css}' on {driver.current_url}", has, deadline)


def fill(driver, css, value):
    field = element(driver, css)
    field.clear()
    field.send_keys(value)
    return field


def click(driver, css):
    target = element(driver, css)
    wait_for(f"'{css}' to be enabled", target.is_enabled, 10)
    target.click()
    return target


def screenshot(driver, name):
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def console_errors(driver):
    """The page's console messages at SEVERE level (a CSP violation, an uncaught error)."""
    try:
        return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    except WebDriverException:
        return []


def expect(condition, message):
    if not condition:
        raise JourneyFailure(message)


# --- the API, for checks the page cannot show -------------------------------------------------

def api(method, path, body=None, token=None, headers=None, base=None):
    """Calls the API; returns (status, parsed JSON or None, headers)."""
    request = urllib.request.Request((base or WEB) + path, method=method)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None), dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return error.code, parsed, dict(error.headers)


def login(email_address, password):
    status, body, _ = api("POST", "/v1/auth/login", {"email": email_address, "password": password})
    expect(status == 200, f"login of {email_address} answered {status}: {body}")
    return body["accessToken"]


def set_payment_faults(faults):
    """Sets the payments sandbox's faults (`{}` for none)."""
    status, body, _ = api("POST", "/_sandbox/faults", faults, token=env("SHOPFLEET_PAYMENTS_API_KEY"),
                          base=env("SHOPFLEET_SANDBOX_URL").rstrip("/"))
    expect(status == 200, f"setting the sandbox's faults answered {status}: {body}")


def mails_to(address):
    """The mails in the sink addressed to `address`: (subject, text body) pairs."""
    directory = pathlib.Path(env("SHOPFLEET_MAILDIR")) / "new"
    found = []
    for path in sorted(directory.glob("*")) if directory.exists() else []:
        message = email.message_from_bytes(path.read_bytes())
        if address.lower() in (message.get("To") or "").lower():
            parts = [message] if not message.is_multipart() else [p for p in message.walk() if p.get_content_type() == "text/plain"]
            text = "".join((p.get_payload(decode=True) or b"").decode(errors="replace") for p in parts)
            found.append((message.get("Subject") or "", text))
    return found


def run(journey):
    """Runs `journey(driver_factory)`, printing a verdict; exits 1 on a failed check."""
    name = pathlib.Path(sys.argv[0]).stem
    drivers = []

    def factory(**kwargs):
        driver = browser(**kwargs)
        drivers.append(driver)
        return driver

    # The whole journey has a deadline too: a browser or driver that hangs ends it, with the
    # pages' state printed, instead of hanging the test that runs it.
    deadline = int(os.environ.get("SHOPFLEET_JOURNEY_DEADLINE", "600"))

    def out_of_time(_signal, _frame):
        raise JourneyFailure(f"the journey did not finish within {deadline} s (SHOPFLEET_JOURNEY_DEADLINE)")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(deadline)
    try:
        journey(factory)
        print(f"{name}: every check held")
        return 0
    except Exception as failure:  # noqa: BLE001 - everything a journey raises is its verdict
        print(f"{name}: FAILED: {failure}")
        traceback.print_exc(file=sys.stdout)
        for index, driver in enumerate(drivers):
            try:
                shot = screenshot(driver, f"failure-{name}-{index}")
                print(f"  page {index}: {driver.current_url}; screenshot {shot}")
                for line in console_errors(driver):
                    print(f"  console: {line}")
                print("  text: " + driver.find_element(By.TAG_NAME, "body").text[:2000].replace("\n", " | "))
                print("  localStorage: " + str(driver.execute_script(
                    "return Object.fromEntries(Object.keys(localStorage).filter(k => !k.endsWith('tokens')).map(k => [k, localStorage.getItem(k)]))")))
            except WebDriverException:
                pass
        return 1
    finally:
        signal.alarm(0)
        for driver in drivers:
            try:
                driver.quit()
            except WebDriverException:
                pass
