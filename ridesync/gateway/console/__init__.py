"""GET /console: a rider's and a driver's page in the browser, from static
files in this package (no build step, nothing from a CDN), and the little it
needs to know of this gateway (GET /console/config.json)."""
from flask import Blueprint, current_app, jsonify

bp = Blueprint("console", __name__, static_folder="static", static_url_path="/static", url_prefix="/console")


@bp.get("")
@bp.get("/")
def page():
    return bp.send_static_file("index.html")


@bp.get("/config.json")
def config():
    """Whether the page asks for a token or a user id, and where map tiles come from (null: none, offline)."""
    settings = current_app.config["RIDESYNC"]
    return jsonify(authMode=settings.auth_mode, mapTilesURL=settings.map_tiles_url)
