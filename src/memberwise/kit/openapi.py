"""Helpers for documenting hand-parsed request bodies in OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every local ``$ref`` replaced by its definition."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


#: The one error body every refusal has (see kit/errors.py and the app's error handlers).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Stable machine code to branch on."},
        "message": {"type": "string", "description": "A sentence to show."},
        "details": {"description": "More about the problem (validation: one entry each)."},
    },
}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with every operation's refusals documented as the one error body: FastAPI
    documents its own 422 shape (``{"detail": [...]}``), which the API never sends. Every
    operation may answer 4XX; those behind a key also 401 and 403."""
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            responses["4XX"] = {"description": "Refused: `{code, message}`", "content": body}
            if path.startswith("/v1"):
                responses["401"] = {"description": "No valid API key", "content": body}
                responses["403"] = {"description": "The key's role may not", "content": body}
    schemas = spec["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec
