"""Reading request bodies: each is a message of ridesync/messages.py,
decoded and checked before anything goes upstream (a 400 naming the field)."""
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from ridesync import messages
from ridesync.gateway.errors import invalid


def read(kind):
    """The body as a `kind` (a messages.py Struct), whatever the
    Content-Type says (browsers send text/plain for simple cross-origin requests)."""
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()  # werkzeug cuts a chunked body at the limit instead
    if not raw.strip():
        raise invalid("the request body is empty; send a JSON object")
    try:
        return messages.decode(raw, kind)
    except messages.Refused as exc:
        raise invalid(str(exc)) from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise invalid(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("the request body is not valid JSON: it is nested too deeply") from None
