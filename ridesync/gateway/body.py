"""Reading and checking request bodies, before anything goes upstream."""
import json

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from ridesync.gateway.errors import invalid
from ridesync.messages import is_text
from ridesync.gateway.identity import checked
from ridesync.ride.model import Coordinate, InvalidArgument


def json_object():
    """The body as a JSON object, whatever the Content-Type says (browsers
    send text/plain for simple cross-origin requests)."""
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()  # werkzeug cuts a chunked body at the limit instead
    if not raw.strip():
        raise invalid("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("the request body is not valid JSON: it is nested too deeply") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if not is_text(json.dumps(body, ensure_ascii=False)):  # a string no gRPC call could carry: a 500 upstream
        raise invalid("the request body holds a string that is not text (a lone surrogate such as \\ud800)")
    return body


def identifier(body, name):
    """An id (a fare's, a trip's) from a body or query: 400 unless it is one."""
    return checked(body.get(name), name)


def coordinate(body, name):
    value = body.get(name)
    if not isinstance(value, dict):
        raise invalid(f"{name} is required: an object with latitude and longitude")
    try:
        return Coordinate.checked(name, value.get("latitude"), value.get("longitude"))
    except InvalidArgument as exc:
        raise invalid(str(exc)) from None
