"""JSON (API) and HTML (pages) error responses; the API never answers with HTML or a bare 500."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from db.session import DatabaseFileMissing

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/predict", "/healthz", "/readyz", "/metrics")
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "database_unavailable",
}


class ApiError(Exception):
    """An expected failure with an HTTP status, a stable machine code and a human message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def wants_json() -> bool:
    """True for API paths: their errors are always JSON."""
    return request.path.startswith(API_PREFIXES)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """`{"error": {"code", "message"}}` for the API, the error page otherwise."""
    if wants_json():
        return jsonify(error={"code": code, "message": message}), status
    page = render_template("error.html", status=status, code=code, message=message)
    return Response(page, mimetype="text/html"), status


def register_error_handlers(app: Flask) -> None:
    """Map ApiError, HTTP errors, database outages and anything unexpected to clean responses."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = HTTP_CODES.get(status, (exc.name or "error").lower().replace(" ", "_"))
        response, status = error_response(status, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response, status

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeoutError)
    def _database_error(exc: Exception) -> tuple[Response, int]:
        log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
        return error_response(503, "database_unavailable", "the database is unavailable")

    @app.errorhandler(DatabaseFileMissing)
    def _database_file_missing(exc: DatabaseFileMissing) -> tuple[Response, int]:
        log.warning("database unavailable: %s", exc)
        return error_response(
            503, "database_unavailable", "the database is unavailable: its file is missing"
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
