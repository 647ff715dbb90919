"""GET /openapi.json: the HTTP API described (OpenAPI 3.1), the document kept
beside this module and checked against live answers by tests/test_openapi.py."""
from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("api_docs", __name__)
OPENAPI = Path(__file__).with_name("openapi.json")


@bp.get("/openapi.json")
def openapi():
    return Response(OPENAPI.read_bytes(), content_type="application/json")
