"""The API's OpenAPI document, served at /v1/openapi.json (written by hand: the routes are
few, and the shapes are the ones `bot.api.http` checks)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_SUBMISSION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "state": {
            "type": "string",
            "enum": [
                "accepted",
                "checking",
                "invalid",
                "awaiting_confirmation",
                "awaiting_approval",
                "submitting",
                "submitted",
                "running",
                "completed",
                "partially_completed",
                "failed",
                "cancelled",
                "rejected",
                "expired",
                "estimated",
            ],
        },
        "report": {
            "type": ["object", "null"],
            "description": "rows counted and row errors (the user's row numbers)",
        },
        "estimate": {"type": ["object", "null"]},
        "job": {"type": ["object", "null"]},
        "metadata": {"type": "object"},
        "message": {"type": ["string", "null"]},
    },
}
_OPTIONS = {
    "model": {"type": "string"},
    "mode": {"type": "string"},
    "confirm": {"type": "boolean", "description": "submit after the checks (default: the key's setting)"},
    "estimate_only": {"type": "boolean"},
    "skip_invalid": {"type": "boolean"},
    "idempotency_key": {
        "type": "string",
        "description": "the same key within 24 h returns the first submission",
    },
    "callback": {
        "oneOf": [
            {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
            {
                "type": "object",
                "properties": {
                    "openclaw": {
                        "type": "object",
                        "properties": {
                            "url": {"type": "string"},
                            "token": {"type": "string"},
                            "session_key": {"type": "string"},
                        },
                        "required": ["url", "token"],
                    }
                },
            },
        ]
    },
    "metadata": {"type": "object", "description": "passed back verbatim (at most 4 KB)"},
}


def _op(summary: str, ok: int = 200, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            str(ok): {"description": "ok", "content": {"application/json": {"schema": _SUBMISSION}}},
            "default": {"description": "error", "content": {"application/json": {"schema": _ERROR}}},
        },
    }
    if body is not None:
        op["requestBody"] = body
    return op


_ID = [{"name": "sub", "in": "path", "required": True, "schema": {"type": "string"}}]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "batchjob-bot agents API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/v1/submissions": {
            "post": _op(
                "Submit a prompt file: uploaded, by URL, by BatchJob file_id and count, or rows inline",
                202,
                {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "url": {"type": "string"},
                                    "file_id": {"type": "string"},
                                    "count": {"type": "integer"},
                                    "rows": {"type": "array", "items": {"type": "object"}},
                                    **_OPTIONS,
                                },
                            }
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}, **_OPTIONS},
                            }
                        },
                    }
                },
            ),
            "get": {
                **_op("This key's submissions, newest first"),
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
            },
        },
        "/v1/submissions/{sub}": {
            "get": {
                **_op("One submission (include=results: with the results' manifest once finished)"),
                "parameters": [*_ID, {"name": "include", "in": "query", "schema": {"enum": ["results"]}}],
            }
        },
        "/v1/submissions/{sub}/confirm": {"post": {**_op("Confirm: submit the job"), "parameters": _ID}},
        "/v1/submissions/{sub}/cancel": {
            "post": {**_op("Cancel (before or after the submit)"), "parameters": _ID}
        },
        "/v1/submissions/{sub}/results": {"get": {**_op("The results' manifest"), "parameters": _ID}},
    },
}
