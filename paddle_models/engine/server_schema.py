"""The OpenAPI 3 description of the server's endpoints (``GET /openapi.json``; the fuzz tests run
schemathesis against it).

The records' schema comes from the family's serving task (``Task.record_schema``); everything else is the
engine's: the probes, ``/v1/model``, ``/metrics``, ``/v1/predict`` with each status it answers, and the
error body every failure has (``{"error": message}``, plus ``errors`` naming each bad record).
"""
from __future__ import annotations

ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string"},
    "errors": {"type": "array", "items": {
        "type": "object", "required": ["index", "id", "field", "message"],
        "properties": {"index": {"type": "integer", "minimum": 0}, "id": {"type": "string", "nullable": True},
                       "field": {"type": "string"}, "message": {"type": "string"}}}}}}

PREDICT_STATUSES = {  # status -> what it means (every one but 200 has the error body)
    "400": "the body is not JSON, or nests too deep",
    "401": "missing or wrong bearer token (a server started with --token-file)",
    "413": "body or record count over the limit",
    "422": "not {\"records\": [...]}, or a bad record (each named in errors)",
    "501": "this export answers no request records",
    "503": "busy (Retry-After) or shutting down",
    "504": "not answered within the request timeout",
    "500": "the prediction failed",
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _predict(record_schema: dict, max_records: int | None) -> dict:
    records = {"type": "array", "minItems": 1, "items": record_schema}
    if max_records:
        records["maxItems"] = int(max_records)  # more: 413
    body = {"type": "object", "required": ["records"], "properties": {"records": records}}
    responses = {"200": _json({"type": "object", "required": ["predictions"], "properties": {
        "predictions": {"type": "array", "items": {"type": "object"}}}}, "one prediction row per record, in order")}
    responses.update({status: _json({"$ref": "#/components/schemas/Error"}, what)
                      for status, what in PREDICT_STATUSES.items()})
    return {"post": {"summary": "predict records", "operationId": "predict",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                     "responses": responses}}


def _guarded(summary: str, operation_id: str, ok: dict) -> dict:
    """A GET that needs the bearer token when the server has one."""
    return {"get": {"summary": summary, "operationId": operation_id, "responses": {
        "200": ok, "401": _json({"$ref": "#/components/schemas/Error"}, "missing or wrong bearer token")}}}


def openapi_schema(task, max_records: int | None = None) -> dict:
    """The OpenAPI 3.0 document of a server whose serving task is ``task`` and that takes at most
    ``max_records`` records per request."""
    status = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string"}, "version": {"type": "string"}}}
    paths = {
        "/healthz": {"get": {"summary": "the process is up", "operationId": "healthz",
                             "responses": {"200": _json(status, "up")}}},
        "/readyz": {"get": {"summary": "a model is loaded and the server is not draining", "operationId": "readyz",
                            "responses": {"200": _json(status, "ready"), "503": _json(status, "draining")}}},
        "/v1/model": _guarded("the export's facts and the batching settings", "model",
                              _json({"type": "object", "required": ["family", "version", "labels"]}, "facts")),
        "/metrics": _guarded("Prometheus metrics of this process", "metrics", {
            "description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        "/v1/predict": _predict(task.record_schema(), max_records),
        "/openapi.json": {"get": {"summary": "this document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
    }
    return {"openapi": "3.0.3", "info": {"title": "paddle-models serve", "version": "1"}, "paths": paths,
            "components": {"schemas": {"Error": ERROR},
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
