"""The storefront, entirely through its pages: a search with a typo and filters, an anonymous
cart, the API's problems shown, registration that merges the cart, a checkout that stays one
order across a reload, an order followed to `completed` (and its mail), the history, a declined
order, a phone-sized screen and the keyboard."""

import json
import re
import sys
import time

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

import harness
from harness import click, element, elements, expect, fill, screenshot, wait_for, wait_text

# Answers the journey provokes on purpose. Chromium logs every 4xx answer to fetch() as a SEVERE
# "Failed to load resource" line; these (and only these) are expected, anything else fails.
EXPECTED_NETWORK_ERRORS = [
    (re.compile(r"/v1/auth/register\b"), 422),               # the 3-character password
    (re.compile(r"/v1/orders(\?|\s|$)"), 422),               # country "gb"
    (re.compile(r"/v1/orders/ord-[^/\s]+(\s|$)"), 404),      # an accepted order not recorded yet
    (re.compile(r"/v1/(?!auth/)"), 401),                     # an expired access token, then refreshed
]


def unexpected_console_errors(driver):
    left = []
    for line in harness.console_errors(driver):
        status = re.search(r"status of (\d{3})", line)
        url = line.split(" ", 1)[0]
        if status and any(pattern.search(url) and int(status.group(1)) == code for pattern, code in EXPECTED_NETWORK_ERRORS):
            continue
        left.append(line)
    return left


def local(driver, name):
    return driver.execute_script("return localStorage.getItem(arguments[0])", f"shopfleet.store.{name}")


def go(driver, hash_path):
    driver.get(f"{harness.WEB}/{hash_path}")


def result_names(driver):
    if elements(driver, "#results[aria-busy]"):
        return None  # still searching
    return [found.text for found in elements(driver, '[data-test="result-name"]')]


def gone(found):
    """Whether an element has left the page (the view was drawn again)."""
    try:
        found.is_enabled()
        return False
    except StaleElementReferenceException:
        return True


def search(driver, q="", category="", maximum="", in_stock=False):
    shown = element(driver, "#results")
    fill(driver, "#search-q", q)
    fill(driver, "#filter-category", category)
    fill(driver, "#filter-max", maximum)
    box = element(driver, "#filter-instock")
    if box.is_selected() != in_stock:
        box.click()
    click(driver, "#search-go")
    wait_for("the results of the new search", lambda: gone(shown))  # never the previous search's


def expect_results(driver, what, present=(), absent=()):
    def shown():
        names = result_names(driver)
        return names is not None and all(p in names for p in present) and not any(a in names for a in absent) and names
    names = wait_for(f"{what}: {list(present)} and none of {list(absent)} among the results", shown)
    return names


def add_from_search(driver, q, name, quantity):
    go(driver, "#/")
    search(driver, q)
    expect_results(driver, f"'{q}' finds {name}", present=[name])
    driver.find_element(By.XPATH, f'//*[@data-test="result-name"][normalize-space()="{name}"]').click()
    wait_text(driver, "#product-name", name)
    fill(driver, "#product-qty", str(quantity))
    click(driver, "#add-to-cart")
    wait_text(driver, '[role="status"].done', f"{quantity} × {name}")


def cart_lines(driver):
    """{product name: quantity} once the cart page shows its lines."""
    return {line.find_element(By.CSS_SELECTOR, '[data-test="line-name"]').text:
            int(line.find_element(By.CSS_SELECTOR, 'input[type="number"]').get_attribute("value"))
            for line in elements(driver, '[data-test="cart-line"]')}


def text_now(driver, css):
    """The element's text as it is now, shown or not (no waiting)."""
    found = elements(driver, css)
    return found[0].get_attribute("textContent").strip() if found else ""


def wait_final_status(driver, deadline=60.0):
    return wait_for("the order to end (completed or cancelled)",
                    lambda: (text := element(driver, "#order-status").text) in ("completed", "cancelled") and text, deadline)


def fill_address(driver, country):
    for css, value in (("#ship-name", "Ada Lovelace"), ("#ship-line1", "12 Analytical Row"), ("#ship-line2", ""),
                       ("#ship-postal", "N1 9GU"), ("#ship-city", "London"), ("#ship-country", country)):
        fill(driver, css, value)


def order_id_in_url(driver):
    match = re.search(r"#/orders/(ord-[^/?]+)$", driver.current_url)
    return match and match.group(1)


def journey(new_browser):
    shop = new_browser()
    email = f"journey-{int(time.time() * 1000)}@example.com"
    password = "correct horse battery"

    # 1. Search with typos; filters narrow.
    go(shop, "")
    search(shop, "lamb")
    expect_results(shop, "'lamb' (a typo) finds the lamp", present=["Brass Desk Lamp"])
    screenshot(shop, "storefront-search")
    search(shop, "cusion")
    expect_results(shop, "'cusion' (a typo) finds the cushion", present=["Linen Cushion"])
    search(shop, category="lighting")
    expect_results(shop, "category lighting", present=["Brass Desk Lamp"],
                   absent=["Oak Reading Chair", "Linen Cushion", "Stoneware Mug"])
    search(shop, maximum="30")
    expect_results(shop, "at most 30.00", present=["Linen Cushion", "Stoneware Mug"],
                   absent=["Brass Desk Lamp", "Oak Reading Chair"])
    search(shop, category="home", maximum="30", in_stock=True)
    expect_results(shop, "home, at most 30.00, in stock", present=["Linen Cushion"],
                   absent=["Brass Desk Lamp", "Oak Reading Chair", "Stoneware Mug"])
    expect("inStock" not in shop.current_url and "instock=1" in shop.current_url,
           f"the search's filters are in the page's address: {shop.current_url}")

    # 2. An anonymous cart: the lamp ×1 and the cushion ×2 from their product pages.
    add_from_search(shop, "lamb", "Brass Desk Lamp", 1)
    anonymous = local(shop, "cartId")
    expect(anonymous and re.fullmatch(r"anon-[0-9a-f]{32}", anonymous), f"the edge's X-Cart-ID is kept: {anonymous!r}")
    add_from_search(shop, "cusion", "Linen Cushion", 2)
    screenshot(shop, "storefront-product")
    expect(local(shop, "cartId") == anonymous, "the second line went to the same anonymous cart")
    click(shop, "#nav-cart")
    lines = wait_for("the cart to show both lines",
                     lambda: (found := cart_lines(shop)) == {"Brass Desk Lamp": 1, "Linen Cushion": 2} and found)
    wait_text(shop, "#cart-count", "3")
    screenshot(shop, "storefront-cart")

    # 3. Bad input shows the API's problem, not a blank page.
    go(shop, "#/register")
    fill(shop, "#register-name", "Journey Customer")
    fill(shop, "#register-email", email)
    fill(shop, "#register-password", "abc")
    click(shop, "#register-go")
    problem = wait_text(shop, '#view [role="alert"]', "password")
    expect(element(shop, "#register-go").is_displayed() and "Create an account" in shop.find_element(By.TAG_NAME, "h1").text,
           f"the register form is still shown with the problem ({problem!r})")

    # 4. Register (which logs in); the anonymous cart is merged into the customer's.
    fill(shop, "#register-password", password)
    click(shop, "#register-go")
    wait_text(shop, "#whoami", email)
    expect(local(shop, "cartId") is None, "the anonymous cart id is forgotten after the login merged it")
    click(shop, "#nav-cart")
    wait_for("the merged cart to show both lines", lambda: cart_lines(shop) == lines)

    # 5. Check out: a bad country first (the 422's detail shown), a reload keeps the form and the key,
    #    and "Place order" pressed around a reload still makes one order.
    click(shop, "#checkout")
    wait_for("the checkout page", lambda: shop.current_url.endswith("#/checkout"))
    fill_address(shop, "gb")
    click(shop, "#place-order")
    wait_text(shop, '#view [role="alert"]', "country")
    key = local(shop, "checkoutKey")
    expect(key and re.fullmatch(r"[0-9a-f-]{36}", key), f"an idempotency key is kept for the checkout: {key!r}")
    shop.refresh()
    wait_for("the form to come back after the reload", lambda: element(shop, "#ship-country").get_attribute("value") == "gb")
    expect(element(shop, "#ship-name").get_attribute("value") == "Ada Lovelace", "the typed name came back")
    expect(local(shop, "checkoutKey") == key, "the reload kept the idempotency key")
    fill(shop, "#ship-country", "GB")
    expect(element(shop, "#payment-method").get_attribute("value") == "pm_card_visa", "the visa card is the default")
    shop.execute_script("window.scrollTo(0, 0)")
    screenshot(shop, "storefront-checkout")
    click(shop, "#place-order")
    shop.refresh()  # perhaps before the answer arrived: pressing again must not place a second order
    wait_for("the page to load after the reload",
             lambda: order_id_in_url(shop) or (shop.current_url.endswith("#/checkout") and element(shop, "#place-order", 2)))
    if not order_id_in_url(shop):
        now = local(shop, "checkoutKey")
        expect(now == key, f"still the same idempotency key after the reload (was {key}, now {now}; "
                           f"accepted order remembered: {local(shop, 'checkoutOrder')})")
        click(shop, "#place-order")
    order_id = wait_for("the order's page", lambda: order_id_in_url(shop))
    # Going back to the checkout with the cart unchanged shows the order placed, not a new checkout.
    go(shop, "#/checkout")
    wait_for("the checkout to send the customer to the order it placed", lambda: order_id_in_url(shop) == order_id)
    expect(local(shop, "checkoutKey") == key, "the key stays until the cart changes")

    # 6. The order page follows the order to completed; the confirmation mail arrives.
    status = wait_final_status(shop)
    expect(status == "completed", f"order {order_id} ended {status}: {text_now(shop, '#order-reason')!r}")
    screenshot(shop, "storefront-order")
    mails = wait_for(f"the confirmation mail to {email}",
                     lambda: [m for m in harness.mails_to(email) if order_id in m[0] + m[1]], deadline=30)
    expect(any("confirm" in subject.lower() for subject, _ in mails), f"a confirmation among the mails: {mails}")
    token = json.loads(local(shop, "tokens"))["accessToken"]
    code, body, _ = harness.api("GET", "/v1/orders", token=token)
    expect(code == 200 and [o["orderID"] for o in body["items"]] == [order_id],
           f"exactly one order was placed ({order_id}): {code} {body}")

    # 7. The history lists it; a declined card ends cancelled with its reason.
    click(shop, "#nav-orders")
    wait_for("the order in the history",
             lambda: any(order_id in row.text for row in elements(shop, '[data-test="order-row"]')))
    screenshot(shop, "storefront-history")
    add_from_search(shop, "mug", "Stoneware Mug", 1)
    click(shop, "#nav-cart")
    wait_for("the mug in the cart", lambda: "Stoneware Mug" in cart_lines(shop))
    click(shop, "#checkout")
    wait_for("the address typed before", lambda: element(shop, "#ship-country").get_attribute("value") == "GB")
    expect(local(shop, "checkoutKey") not in (None, key), "a new checkout has a new idempotency key")
    Select(element(shop, "#payment-method")).select_by_value("pm_card_chargeDeclined")
    declined_key = local(shop, "checkoutKey")
    click(shop, "#place-order")
    declined_id = wait_for("the second order's page", lambda: (found := order_id_in_url(shop)) != order_id and found)
    status = wait_final_status(shop)
    reason = text_now(shop, "#order-reason")
    expect(status == "cancelled" and reason, f"the declined order {declined_id} ended {status} with reason {reason!r}")
    expect("declin" in reason.lower(), f"the reason says the payment was declined: {reason!r}")
    screenshot(shop, "storefront-declined")
    # A declined card leaves the cart as it was: checking out again is a new order (a new key) that
    # another card pays.
    go(shop, "#/checkout")
    element(shop, "#place-order")
    expect(local(shop, "checkoutKey") not in (None, declined_key), "a checkout after a declined order has a new key")
    Select(element(shop, "#payment-method")).select_by_value("pm_card_visa")
    click(shop, "#place-order")
    paid_id = wait_for("the third order's page", lambda: (found := order_id_in_url(shop)) not in (None, order_id, declined_id) and found)
    status = wait_final_status(shop)
    expect(status == "completed", f"the order paid with another card ({paid_id}) ended {status}")

    # 8. A phone-sized screen: no horizontal scrolling.
    phone = new_browser(width=375, height=800)
    # Headless Chromium keeps its window at least 500 px wide whatever --window-size says, so the
    # phone's viewport is set the way DevTools' device mode does it.
    phone.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    go(phone, "")
    viewport = phone.execute_script("return window.innerWidth")
    expect(viewport == 375, f"the phone's viewport is 375 px wide, not {viewport}")
    wait_for("results on the phone", lambda: result_names(phone))
    width = phone.execute_script("return document.documentElement.scrollWidth")
    expect(width <= 375, f"the search page is {width} px wide on a 375 px screen")
    screenshot(phone, "storefront-phone")

    # 9. The keyboard alone: Tab reaches the search box, Enter searches.
    go(shop, "")
    element(shop, "#search-q")
    for _ in range(30):
        focused = shop.switch_to.active_element
        if focused.get_attribute("id") == "search-q":
            break
        focused.send_keys(Keys.TAB)
    expect(shop.switch_to.active_element.get_attribute("id") == "search-q", "Tab reaches the search box")
    shown = element(shop, "#results")
    shop.switch_to.active_element.send_keys("mug" + Keys.ENTER)
    wait_for("Enter to search", lambda: gone(shown))
    expect_results(shop, "Enter in the search box searches (mug)", present=["Stoneware Mug"], absent=["Brass Desk Lamp"])
    expect("q=mug" in shop.current_url, f"the search ran from the keyboard: {shop.current_url}")

    for driver in (shop, phone):
        errors = unexpected_console_errors(driver)
        expect(errors == [], f"console errors on {driver.current_url}: {errors}")


if __name__ == "__main__":
    sys.exit(harness.run(journey))
