"""``docs/api.md``: the HTTP API of ``distil serve``, then of ``distil stack serve``, written from the servers' own
OpenAPI schemas.

Every route, its request body, its answer and its errors come from the FastAPI apps that
:func:`distil.serve.server.create_app` and :func:`distil.stack.server.create_stack_app` build, so a route, a field or
an error added to either shows up here the next time this runs; a test regenerates the page and fails when the
committed one differs. The stack's part lists its routes and only the bodies the first part does not.

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


class NotLoaded:
    """A stand-in model: the documentation builds the apps, and never calls a model."""

    def label_distribution(self, inputs: list[str]) -> Any:
        raise RuntimeError("documentation only: no model is loaded")

    def generate(self, inputs: list[str], **params: Any) -> list[str]:
        raise RuntimeError("documentation only: no model is loaded")


def _stand_in_run(run_id: str = "RUN_ID") -> Any:
    from distil.serve.runs import ServedModel

    return ServedModel(
        run_id=run_id, kind="classify", labels=["LABEL"], student=NotLoaded(), teacher=None, threshold=0.0
    )


def _fastapi_app(app: Any) -> Any:
    while not hasattr(app, "openapi") and hasattr(app, "app"):  # the middleware in front of the FastAPI app
        app = app.app
    return app


STACK_INTRO = """\
`distil stack serve stack.yaml --as OPERATOR` (docs/stack.md) serves several specialists, each a shipped run, behind
one endpoint with the conventions above (API key, bodies, errors, load). Each specialist answers as `distil serve`
answers for its run, escalating what it is unsure of to the generalist; the stack adds how a request finds its
specialist (`model`, or the `task` field, or the router model) and says who answered (`specialist`, `routed_by`,
`escalated`, `router_confidence`). `/metrics` adds per-specialist series with a `specialist` label.

```sh
curl -s http://127.0.0.1:8000/v1/classify -H "Content-Type: application/json" \\
  -d '{"input": ["I was charged twice"], "task": "triage"}'
```
"""


def documentation_app() -> Any:
    """The server's FastAPI app, built around a stand-in run: routes, bodies and errors do not depend on the model
    served, and nothing is loaded."""
    from distil.serve.server import create_app

    return _fastapi_app(create_app(_stand_in_run()))


def documentation_stack_app() -> Any:
    """The stack's FastAPI app, built around two stand-in specialists: its routes, bodies and errors do not depend on
    the specialists, and nothing is loaded or checked."""
    from distil.stack.load import LoadedStack
    from distil.stack.server import create_stack_app
    from distil.stack.spec import Stack, StackSpec

    spec = StackSpec.model_validate(
        {
            "name": "support",
            "specialists": [{"name": name, "project": f"{name}/distil.yaml"} for name in ("one", "two")],
            "generalist": {"project": "one/distil.yaml"},
        }
    )
    specialists = {name: _stand_in_run(name) for name in ("one", "two")}
    loaded = LoadedStack(Stack(Path("stack.yaml"), spec), specialists, None, [], "GENERALIST")
    return _fastapi_app(create_stack_app(loaded))


def api_schema(app: Any = None) -> dict[str, Any]:
    """The OpenAPI schema of the server (or of ``app``), as it answers: without FastAPI's 422 (its 400 replaces
    it)."""
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


def route_section(
    method: str, path: str, operation: Mapping[str, Any], level: str = "###", suffix: str = ""
) -> list[str]:
    lines = [f"{level} `{method} {path}`{suffix}", ""]
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


def anchor(heading: str) -> str:
    """The id a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return "".join(c for c in heading.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def route_index(routes: list[tuple[str, str, dict[str, Any]]], suffix: str = "") -> list[str]:
    lines = ["| route | what | key |", "|---|---|---|"]
    for method, path, operation in routes:
        first = (operation.get("description") or operation.get("summary") or "").strip().split(". ")[0].rstrip(".")
        to = anchor(f"{method} {path}{suffix}")
        lines.append(f"| [`{method} {path}`](#{to}) | {cell(first)} | {'open' if _is_open(operation) else 'API key'} |")
    return lines + [""]


def body_sections(schema: Mapping[str, Any], level: str, skip: Iterable[str] = ()) -> list[str]:
    """Each body's fields, by name; ``skip``: bodies documented already (links find them there)."""
    lines: list[str] = []
    for name, body in sorted(components(schema).items()):
        if name in set(skip):
            continue
        lines += [f"{level} {name}", ""]
        if body.get("description"):
            lines += [" ".join(body["description"].split()), ""]
        lines += fields_table(body)
    return lines


def components(schema: Mapping[str, Any]) -> dict[str, Any]:
    return (schema.get("components") or {}).get("schemas", {})


def render(schema: Mapping[str, Any]) -> str:
    """docs/api.md from the OpenAPI schema: the conventions, a route index, each route, then each body's fields."""
    routes = list(operations(schema))
    lines = [
        "# The HTTP API",
        "",
        "<!-- Written by `python -m distil.serve.apidoc` from the servers' OpenAPI schemas; do not edit by hand. -->",
        "",
        INTRO,
        "## Routes",
        "",
        *route_index(routes),
    ]
    for method, path, operation in routes:
        lines += route_section(method, path, operation)
    lines += ["## Bodies", ""]
    lines += body_sections(schema, "###")
    return "\n".join(lines).rstrip() + "\n"


STACK_SUFFIX = " (stack)"  # a stack route's heading: its paths are the single-run server's, its anchors must differ


def render_stack(schema: Mapping[str, Any], documented: Iterable[str]) -> str:
    """The stack's part of docs/api.md: its conventions, routes, and the bodies not in ``documented``."""
    routes = list(operations(schema))
    lines = [
        "## The stack: `distil stack serve`",
        "",
        STACK_INTRO,
        "### Stack routes",
        "",
        *route_index(routes, STACK_SUFFIX),
    ]
    for method, path, operation in routes:
        lines += route_section(method, path, operation, "####", STACK_SUFFIX)
    lines += ["### Stack bodies", "", "Bodies not listed here are the single-run server's, above.", ""]
    lines += body_sections(schema, "####", skip=documented)
    return "\n".join(lines).rstrip() + "\n"


def api_page() -> str:
    """The whole of docs/api.md: `distil serve`'s API, then the stack's."""
    serve = api_schema()
    stack = api_schema(documentation_stack_app())
    return render(serve) + "\n" + render_stack(stack, documented=components(serve))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distil.serve.apidoc", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOC_PATH, help="Where to write (default: docs/api.md).")
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 when the file differs.")
    args = parser.parse_args(argv)
    text = api_page()
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
