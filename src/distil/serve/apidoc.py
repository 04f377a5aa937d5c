"""``docs/api.md``: the HTTP API of ``distil serve``, written from the server's own OpenAPI schema.

Every route, its request body, its answer and its errors come from the FastAPI app that
:func:`distil.serve.server.create_app` builds, so a route, a field or an error added to the server shows up here
the next time this runs; a test regenerates the page and fails when the committed one differs.

    python -m distil.serve.apidoc            # write docs/api.md
    python -m distil.serve.apidoc --check    # exit 1 when docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "api.md"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# FastAPI documents a 422 for a body it cannot validate; this server answers such a body with 400 and its own error
# body (see the handler in create_app), so the 422 and the schemas only it uses are left out.
FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")

INTRO = """\
`distil serve RUN --as OPERATOR` answers on `http://127.0.0.1:8000` (`--host`, `--port`). It speaks enough of
OpenAI's API for an OpenAI client to use it (`/v1/chat/completions`, `/v1/models`), plus `/v1/classify` for labels
with their distributions, `/healthz`, `/readyz` and Prometheus `/metrics`.

- **API key.** Started with `--api-key KEY` (or `DISTIL_API_KEY`), every route except those marked *open* needs
  `Authorization: Bearer KEY` (or `X-API-Key: KEY`); without it the answer is 401.
- **Bodies** are JSON. A body over the server's limit (1 MiB by default) is refused with 413 before it is read.
- **Errors** all have one body, OpenAI's: `{"error": {"message", "type", "param", "code"}}` (see
  [ErrorBody](#errorbody)). Bad input is a 4xx, never a 5xx; an unknown path is 404 with the same body.
- **Load.** Each model has a bounded queue (the spec's `serve` section): when the student's is full a model route
  answers 429 with `Retry-After` at once; a saturated or slow teacher leaves the student's answer, marked
  `student_fallback`. Texts longer than the student's context lose their start (`truncated`). A request head not
  complete within `serve.header_timeout_s` closes the connection; a body not complete within `serve.body_timeout_s`
  gets 408.

```sh
curl -s http://127.0.0.1:8000/v1/classify -H "Authorization: Bearer $DISTIL_API_KEY" \\
  -H "Content-Type: application/json" -d '{"input": ["I was charged twice", "the app crashes on start"]}'
```
"""


def documentation_app() -> Any:
    """The server's FastAPI app, built around a stand-in run: routes, bodies and errors do not depend on the model
    served, and nothing is loaded."""
    from distil.serve.runs import ServedModel
    from distil.serve.server import create_app

    class NotLoaded:
        def label_distribution(self, inputs: list[str]) -> Any:
            raise RuntimeError("documentation only: no model is loaded")

        def generate(self, inputs: list[str], **params: Any) -> list[str]:
            raise RuntimeError("documentation only: no model is loaded")

    served = ServedModel(
        run_id="RUN_ID", kind="classify", labels=["LABEL"], student=NotLoaded(), teacher=None, threshold=0.0
    )
    app = create_app(served)
    while not hasattr(app, "openapi") and hasattr(app, "app"):  # the middleware in front of the FastAPI app
        app = app.app
    return app


def api_schema(app: Any = None) -> dict[str, Any]:
    """The OpenAPI schema of the server, as it answers: without FastAPI's 422 (this server's 400 replaces it)."""
    schema = (app or documentation_app()).openapi()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in FASTAPI_ONLY:
        components.pop(name, None)
    return schema


# --- JSON schema to words ----------------------------------------------------------------------------------


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def link(name: str) -> str:
    return f"[{name}](#{name.lower()})"


def type_text(prop: Mapping[str, Any]) -> str:
    """A JSON schema as a reader says it: ``string``, ``list of string``, ``"student" or "teacher"``, a link."""
    if "$ref" in prop:
        return link(ref_name(prop["$ref"]))
    if "const" in prop:
        return f'`"{prop["const"]}"`'
    if "enum" in prop:
        return " or ".join(f'`"{v}"`' for v in prop["enum"])
    if "anyOf" in prop:
        options = [type_text(p) for p in prop["anyOf"]]
        return " or ".join(dict.fromkeys(options))  # in order, once each
    kind = prop.get("type")
    if kind == "array":
        return f"list of {type_text(prop.get('items') or {})}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"object of {type_text(values)}" if isinstance(values, dict) and values else "object"
    return str(kind or "any")


def _plain(number: Any) -> str:
    return str(int(number)) if isinstance(number, float) and number.is_integer() else str(number)


def limits_text(prop: Mapping[str, Any]) -> str:
    words = []
    for key, template in (
        ("minimum", "≥ {}"),
        ("exclusiveMinimum", "> {}"),
        ("maximum", "≤ {}"),
        ("exclusiveMaximum", "< {}"),
        ("minLength", "at least {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
    ):
        if key in prop:
            one = key in ("minLength", "minItems") and prop[key] == 1
            words.append("not empty" if one else template.format(_plain(prop[key])))
    for option in prop.get("anyOf", []):
        words += [w for w in (limits_text(option),) if w]
    return "; ".join(words)


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def fields_table(schema: Mapping[str, Any]) -> list[str]:
    """One row per property: name, type, required or its default, limits and description."""
    properties = schema.get("properties") or {}
    if not properties:
        return ["(no fields)", ""]
    required = set(schema.get("required") or [])
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        need = (
            "yes"
            if name in required
            else ("no" if "default" not in prop else f"no (default `{_json(prop['default'])}`)")
        )
        notes = [prop.get("description", "").rstrip("."), limits_text(prop)]
        lines.append(
            f"| `{name}` | {cell(type_text(prop))} | {cell(need)} | {cell('; '.join(n for n in notes if n))} |"
        )
    extra = schema.get("additionalProperties")
    if extra is False:
        lines.append("")
        lines.append("Fields not listed are refused (400, `extra_forbidden`).")
    elif extra is True:
        lines.append("")
        lines.append("Fields not listed are accepted and ignored.")
    return lines + [""]


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


# --- the page ------------------------------------------------------------------------------------------------


def operations(schema: Mapping[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every route, in the order the server declares them."""
    for path, methods in (schema.get("paths") or {}).items():
        for method in HTTP_METHODS:
            if method in methods:
                yield method.upper(), path, methods[method]


def _body_of(content: Mapping[str, Any]) -> str:
    """What a request or response content is: a linked body, or its media type (each, when it has several)."""
    kinds = []
    for media, spec in content.items():
        inner = spec.get("schema") or {}
        if "$ref" in inner:
            kinds.append(f"{link(ref_name(inner['$ref']))} (`{media}`)")
        else:
            kinds.append(f"`{media}`" + (f", {type_text(inner)}" if inner else ""))
    return " or ".join(kinds) or "none"


def _is_open(operation: Mapping[str, Any]) -> bool:
    return "401" not in (operation.get("responses") or {})


def route_section(method: str, path: str, operation: Mapping[str, Any]) -> list[str]:
    lines = [f"### `{method} {path}`", ""]
    description = (operation.get("description") or operation.get("summary") or "").strip()
    if description:
        lines += [" ".join(description.split()), ""]
    if _is_open(operation):
        lines += ["*Open*: needs no API key.", ""]
    body = operation.get("requestBody")
    if body:
        lines += [f"**Request body**: {_body_of(body.get('content') or {})}.", ""]
    responses = operation.get("responses") or {}
    lines += ["| status | answer | when |", "|---|---|---|"]
    for status in sorted(responses, key=str):
        response = responses[status]
        when = response.get("description", "")
        if status.startswith("2"):
            when = "success" if when in ("Successful Response", "") else when
        lines.append(f"| {status} | {cell(_body_of(response.get('content') or {}))} | {cell(when)} |")
    return lines + [""]


def render(schema: Mapping[str, Any]) -> str:
    """docs/api.md from the OpenAPI schema: the conventions, a route index, each route, then each body's fields."""
    routes = list(operations(schema))
    lines = [
        "# The HTTP API",
        "",
        "<!-- Written by `python -m distil.serve.apidoc` from the server's OpenAPI schema; do not edit by hand. -->",
        "",
        INTRO,
        "## Routes",
        "",
        "| route | what | key |",
        "|---|---|---|",
    ]
    for method, path, operation in routes:
        first = (operation.get("description") or operation.get("summary") or "").strip().split(". ")[0].rstrip(".")
        anchor = f"{method} {path}".lower().replace(" ", "-").replace("/", "").replace(".", "")
        lines.append(
            f"| [`{method} {path}`](#{anchor}) | {cell(first)} | {'open' if _is_open(operation) else 'API key'} |"
        )
    lines.append("")
    for method, path, operation in routes:
        lines += route_section(method, path, operation)
    lines += ["## Bodies", ""]
    for name, body in sorted((schema.get("components") or {}).get("schemas", {}).items()):
        lines += [f"### {name}", ""]
        if body.get("description"):
            lines += [" ".join(body["description"].split()), ""]
        lines += fields_table(body)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distil.serve.apidoc", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC_PATH, help="Where to write (default: docs/api.md).")
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 when the file differs.")
    args = parser.parse_args(argv)
    text = render(api_schema())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run `python -m distil.serve.apidoc`", file=sys.stderr)
            return 1
        return 0
    from distil.files import write_text_atomic

    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
