"""The API gateway: an app factory, one blueprint per area."""
from flask import Flask
from flask_cors import CORS

from ridesync.gateway import errors, health, trips
from ridesync.gateway.upstream import Upstream
from ridesync.settings import Settings

MAX_BODY_BYTES = 16 * 1024


def create_app(settings=None):
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["RIDESYNC"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["ridesync.upstream"] = Upstream(settings)
    CORS(
        app,
        origins=list(settings.cors_origins),
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
    )
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(trips.bp)
    return app
