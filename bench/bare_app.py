"""The capacity baseline: a bare flask-sock echo WebSocket on the same
gunicorn/gevent config and the same simple-websocket options as the gateway,
with no notifications (`gunicorn -c gunicorn.conf.py bench.bare_app:app`)."""
from flask import Flask
from flask_sock import Sock

from ridesync.gateway import MAX_WEBSOCKET_MESSAGE
from ridesync.settings import process_settings

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {
    "ping_interval": process_settings().ws_ping_interval,
    "max_message_size": MAX_WEBSOCKET_MESSAGE,
}
sock = Sock(app)


@sock.route("/ws/riders")
def echo(ws):
    while (data := ws.receive()) is not None:
        ws.send(data)
