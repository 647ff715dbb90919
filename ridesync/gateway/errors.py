"""Every error the gateway answers is JSON: {"error": {"code", "message"}}."""
import logging

import grpc
from flask import jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# gRPC status -> (HTTP status, error code)
GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.CANCELLED: (503, "unavailable"),  # a service refusing calls while it stops
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
}


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def invalid(message):
    return ApiError(400, "invalid_argument", message)


def error_response(status, code, message):
    return jsonify(error={"code": code, "message": message}), status


def register(app):
    @app.errorhandler(ApiError)
    def api_error(exc):
        response, status = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(exc):
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code, code, exc.description)
        for name, value in exc.get_headers():  # such as Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(grpc.RpcError)
    def upstream_error(exc):
        status, code = GRPC_TO_HTTP.get(exc.code(), (502, "upstream_error"))
        message = exc.details() or exc.code().name
        if status >= 500:
            log.warning("%s %s: upstream call failed: %s: %s", request.method, request.path, exc.code().name, message)
            message = f"{_upstream_words(exc.code())}: {message}"
        return error_response(status, code, message)

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("%s %s failed unexpectedly (500)", request.method, request.path)
        return error_response(500, "internal", "something went wrong on our side; try again")


def _upstream_words(code):
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "a service behind the gateway took too long"
    return "a service behind the gateway is unavailable"
