"""The console (/console) in headless Chromium: a rider's page and a
driver's page, each in a browser context of its own, against gunicorn with 2
gevent workers, the three services and RabbitMQ (the ride fixture). What is
asserted is what each person sees on their page."""
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import browser, console  # noqa: F401 (fixtures)
from tests.ride import new_id, ride  # noqa: F401 (ride is a fixture)
from tests.support import ROOT, answer_http, serve_http, token

STATIC = Path(ROOT) / "ridesync/gateway/console/static"
# Any PNG will do as a map tile.
TILE = (STATIC / "vendor/leaflet-1.9.4/images/layers.png").read_bytes()

# No offer here expires on its own; open mode unless a test says otherwise.
OPEN = pytest.mark.ride_env(OFFER_TIMEOUT="60", AUTH_MODE="open")


def sign_in(page, role, user_id=None, package="sedan", jwt=None):
    page.get_by_label(f"a {role}").check()
    if jwt:
        page.locator("#token").fill(jwt)
    else:
        expect(page.locator("#user-id")).to_have_value(re.compile(f"^{role}-[0-9a-f]+$"))  # one suggested
        page.locator("#user-id").fill(user_id)
    if role == "driver":
        page.locator("#package").select_option(package)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#connection")).to_have_text(re.compile(f"^Connected as {role}"))


def signed_in(ride, console, tokens=False):
    """A rider's page and a driver's page, each signed in as a new user (with a token when tokens)."""
    pages = []
    for role in ("rider", "driver"):
        page, user_id = console(ride.url, role), new_id(role)
        sign_in(page, role, user_id, jwt=token(user_id, role) if tokens else None)
        pages.append(page)
    return pages


def status(page):
    return page.locator("#status")


def choose_places_and_start(rider, package="sedan"):
    """Pickup and destination clicked on the map, the fares asked for, one started: the fare's words."""
    rider.locator("#map").click(position={"x": 300, "y": 420})
    rider.locator("#map").click(position={"x": 520, "y": 200})
    expect(rider.locator("#destination")).not_to_have_text("not set")
    rider.get_by_role("button", name="See fares").click()
    fare = rider.locator(f"#fares li[data-package={package}]")
    expect(fare).to_contain_text(re.compile(r"\$\d+\.\d\d"))
    words = fare.inner_text()
    fare.get_by_role("button").click()
    expect(status(rider)).to_have_text("Searching for a driver…")
    return words


def offered(rider, driver, package="sedan"):
    """The rider starts a ride, and the driver's page shows it offered."""
    choose_places_and_start(rider, package)
    expect(driver.locator("#request-text")).to_contain_text(
        re.compile(rf"asks for a {package} ride of \d+\.\d km, fare \$\d+\.\d\d\."))
    expect(driver.locator(".leaflet-overlay-pane path")).to_have_count(3)  # the route, the pickup, the destination
    expect(status(driver)).to_have_text("A ride is offered to you.")


def drive(driver, meanwhile=lambda: None):
    """The driver drives along their path at 1000 km/h, meanwhile() is called, and the car gets there."""
    driver.locator("#speed").fill("1000")
    driver.get_by_role("button", name="Drive along the route").click()
    meanwhile()
    expect(driver.get_by_role("button", name="Drive along the route")).to_be_visible(timeout=30000)


def driver_card(driver):
    """The driver's name and car plate as their page shows them."""
    expect(driver.locator("#driver-card")).not_to_be_empty()
    name, plate = re.match(r"(.+), car (\S+),", driver.locator("#driver-card").inner_text()).groups()
    return name, plate


@OPEN
def test_a_whole_ride_to_completed_with_the_car_driven_along_the_route(ride, console):
    rider, driver = signed_in(ride, console)
    name, plate = driver_card(driver)
    expect(status(rider)).to_have_text("No ride yet.")
    expect(status(driver)).to_have_text("Online, waiting for a ride request.")
    expect(rider.locator("#map.offline")).to_be_visible()  # no MAP_TILES_URL: a plain background
    expect(rider.locator(".leaflet-tile")).to_have_count(0)
    console.shoot("signed-in", rider, driver)

    offered(rider, driver)
    console.shoot("offered", rider, driver)
    driver.get_by_role("button", name="Accept").click()
    expect(status(rider)).to_have_text(f"Driver assigned: {name}, car {plate}. On the way to you.")
    expect(status(driver)).to_have_text("On the way to the pickup.")
    expect(rider.locator("#payment")).to_contain_text("Payment session cs_")
    console.shoot("accepted", rider, driver)

    driver.get_by_role("button", name="I have arrived").click()
    expect(status(rider)).to_have_text(f"Your driver has arrived: {name}, car {plate}.")
    driver.get_by_role("button", name="Start the ride").click()
    expect(status(rider)).to_have_text("Ride in progress.")
    expect(status(driver)).to_have_text("Ride in progress.")

    car = driver.locator(".car")
    before = car.bounding_box()
    drive(driver, lambda: (
        expect(rider.locator(".car")).to_be_visible(),  # trip.event.driver_location: the rider sees the car coming
        expect(rider.locator("#eta")).to_have_text(re.compile(r"^\d+ min to the destination \(\d+\.\d km\)\.$")),
        console.shoot("driving", rider, driver)))
    assert car.bounding_box() != before
    console.shoot("driven", rider, driver)

    driver.get_by_role("button", name="Complete the ride").click()
    for page in (rider, driver):
        expect(status(page)).to_have_text(re.compile(r"^Ride completed\. Fare \$\d+\.\d\d\.$"))
        expect(page.locator("#error")).to_be_hidden()
    console.shoot("completed", rider, driver)


@OPEN
def test_a_declined_ride_tells_the_rider_no_driver_is_available_and_a_replaced_socket_says_so(ride, console):
    rider, driver = signed_in(ride, console)
    offered(rider, driver)
    driver.get_by_role("button", name="Decline").click()
    expect(status(driver)).to_have_text("You declined the ride.")
    expect(status(rider)).to_have_text("No driver is available. Try again.")
    expect(driver.locator("#request")).to_be_hidden()
    console.shoot("declined", rider, driver)

    again = console(ride.url, "rider-again")  # the same rider in another browser: the newer socket wins
    sign_in(again, "rider", rider.locator("#who").inner_text().removeprefix("rider "))
    expect(status(again)).to_have_text("No ride yet.")  # the trip ended: trip.state is null
    expect(rider.locator("#error")).to_contain_text("this user connected somewhere else")
    console.shoot("replaced", rider, again)


def test_in_token_mode_a_rider_cancels_an_accepted_ride_and_a_bad_token_is_refused_in_words(ride, console):
    refused = console(ride.url, "refused")
    expect(refused.locator("#mode")).to_have_text("token mode")
    refused.locator("#token").fill("not-a-token")
    refused.get_by_role("button", name="Connect").click()
    expect(refused.locator("#error")).to_contain_text("The gateway refused to sign you in")
    expect(refused.locator("#error")).to_contain_text("(unauthenticated)")
    console.shoot("bad-token", refused)

    rider, driver = signed_in(ride, console, tokens=True)
    expect(rider.locator("#who")).to_have_text(re.compile("^rider rider-"))
    offered(rider, driver)
    driver.get_by_role("button", name="Accept").click()
    expect(status(rider)).to_have_text(re.compile("^Driver assigned: "))
    rider.locator("#rider-reason").fill("plans changed")
    rider.get_by_role("button", name="Cancel ride").click()
    for page in (rider, driver):
        expect(status(page)).to_have_text("Ride cancelled by the rider: plans changed")
    expect(rider.locator("#rider-cancel")).to_be_hidden()
    expect(driver.locator("#steps")).to_be_hidden()
    console.shoot("cancelled", rider, driver)


@OPEN
def test_pages_reloaded_mid_ride_show_the_ride_where_it_is_and_finish_it(ride, console):
    rider, driver = signed_in(ride, console)
    name, plate = driver_card(driver)
    offered(rider, driver)
    driver.get_by_role("button", name="Accept").click()
    expect(status(driver)).to_have_text("On the way to the pickup.")
    drive(driver)  # to the pickup
    expect(rider.locator(".car")).to_be_visible()
    driver.get_by_role("button", name="I have arrived").click()
    expect(status(rider)).to_have_text(f"Your driver has arrived: {name}, car {plate}.")

    for page in (rider, driver):
        page.reload()
    expect(status(rider)).to_have_text(f"Your driver has arrived: {name}, car {plate}.")
    expect(rider.locator(".car")).to_be_visible()  # trip.state's driverLocation: where the car was last seen
    expect(rider.locator("#payment")).to_contain_text("Payment session cs_")
    expect(status(driver)).to_have_text("At the pickup, waiting for the rider.")
    expect(rider.locator(".leaflet-overlay-pane path")).to_have_count(3)  # the route, the pickup, the destination
    console.shoot("reloaded", rider, driver)

    driver.get_by_role("button", name="Start the ride").click()
    driver.get_by_role("button", name="Complete the ride").click()
    for page in (rider, driver):
        expect(status(page)).to_have_text(re.compile(r"^Ride completed\."))
    console.shoot("completed", rider, driver)


@OPEN
def test_with_map_tiles_url_the_map_is_drawn_on_tiles_from_it(ride, console):
    asked = []

    class Tiles(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            asked.append(self.path)
            answer_http(self, 200, TILE, "image/png")

    server, tiles_url = serve_http(Tiles)
    try:
        gateway = ride.another_gateway(workers=1, MAP_TILES_URL=f"{tiles_url}/{{z}}/{{x}}/{{y}}.png")
        rider = console(gateway, "rider")
        sign_in(rider, "rider", new_id("rider"))
        expect(rider.locator("img.leaflet-tile-loaded").first).to_be_visible()
        assert asked and all(re.fullmatch(r"/14/\d+/\d+\.png", path) for path in asked)
        expect(rider.locator("#map")).not_to_have_class(re.compile("offline"))
        expect(rider.locator(".leaflet-control-attribution")).to_contain_text(f"map tiles: {tiles_url.split('/')[2]}")
        console.shoot("tiles", rider)
    finally:
        server.shutdown()
        server.server_close()


def test_the_console_loads_nothing_from_a_cdn_and_leaflet_is_vendored_pinned_with_its_licence():
    loaded = re.findall(r'(?:src|href)="([^"]+)"', (STATIC / "index.html").read_text())
    assert loaded and all((STATIC / path.removeprefix("/console/static/")).is_file() for path in loaded)
    for script in (STATIC / "js").glob("*.js"):
        assert all(name.startswith("./") for name in re.findall(r'from "([^"]+)"', script.read_text()))
    assert not re.search(r"url\((?!images/|#)", (STATIC / "vendor/leaflet-1.9.4/leaflet.css").read_text())
    assert (STATIC / "vendor/leaflet-1.9.4/LICENSE").is_file()
    assert 't.version="1.9.4"' in (STATIC / "vendor/leaflet-1.9.4/leaflet.js").read_text()
    assert "| Leaflet | 1.9.4 |" in (STATIC / "vendor/README.md").read_text()
