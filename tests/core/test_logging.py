"""Logs: JSON lines in production with the request id and extras, readable text in development."""

from __future__ import annotations

import io
import json
import logging

from rosetta.core.logging import JsonFormatter, RequestIdFilter, TextFormatter, request_id_var


def _emit(formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("rosetta.test.logging")
    logger.handlers[:] = [handler]
    logger.propagate = False
    token = request_id_var.set("req-42")
    try:
        logger.warning("run %s failed", "r1", extra={"job": "finops", "rows": 3})
    finally:
        request_id_var.reset(token)
    return stream.getvalue()


def test_json_lines_carry_request_id_and_extras() -> None:
    record = json.loads(_emit(JsonFormatter()))
    assert record["message"] == "run r1 failed"
    assert record["level"] == "WARNING"
    assert record["request_id"] == "req-42"
    assert record["job"] == "finops"
    assert record["rows"] == 3
    assert record["time"].endswith("+00:00")


def test_text_lines_are_readable() -> None:
    line = _emit(TextFormatter()).strip()
    assert "WARNING" in line
    assert "run r1 failed [req-42]" in line
    assert "job=finops" in line
