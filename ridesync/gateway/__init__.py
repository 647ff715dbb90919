"""The API gateway: an app factory, one blueprint per area."""
from flask import Flask
from flask_cors import CORS

from ridesync.gateway import api_docs, console, errors, health, observed, trips
from ridesync.gateway.dialects import HTTP_HEADER
from ridesync.gateway.frames import V2_SUBPROTOCOL
from ridesync.gateway.health import BrokerProbe
from ridesync.gateway.identity import operator_networks, verifier_for
from ridesync.gateway.limits import TokenBuckets
from ridesync.gateway.locations import LocationRate
from ridesync.gateway.upstream import Upstream
from ridesync.gateway.sockets import routes
from ridesync.gateway.sockets.connection import ReadByHandler
from ridesync.gateway.sockets.hub import Hub
from ridesync.settings import process_settings

MAX_BODY_BYTES = 16 * 1024
# simple-websocket counts a message as its pieces arrive and closes the
# socket (1009) once past this, so a larger frame is never held whole.
MAX_WEBSOCKET_MESSAGE = 64 * 1024


def create_app(settings=None):
    settings = settings or process_settings()
    app = Flask(__name__)
    app.config["RIDESYNC"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": settings.ws_ping_interval,
        "max_message_size": MAX_WEBSOCKET_MESSAGE,
        "subprotocols": [V2_SUBPROTOCOL],
        "thread_class": ReadByHandler,  # each socket's own greenlet reads it: one greenlet a socket, not two
    }
    app.extensions["ridesync.verifier"] = verifier_for(settings)  # refuses to start without a key in token mode
    app.extensions["ridesync.previews"] = TokenBuckets(settings.preview_rate, settings.preview_burst)
    app.extensions["ridesync.location_rate"] = LocationRate(settings.location_max_rate)
    app.extensions["ridesync.upstream"] = Upstream(settings)
    app.extensions["ridesync.broker_probe"] = BrokerProbe(settings.amqp_url)
    app.extensions["ridesync.operators"] = operator_networks(settings)
    app.extensions["ridesync.hub"] = Hub(settings)
    CORS(
        app,
        origins=list(settings.cors_origins),
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization", "X-Request-ID", "traceparent", "tracestate", HTTP_HEADER],
        expose_headers=["X-Request-ID"],
    )
    observed.register(app)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(trips.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(api_docs.bp)
    return app
