"""The validator's web app: server-rendered pages over the ledger and run folders, and the sign-off.

Every page is read-only except ``POST /signoff``, which calls :func:`distil.decide.record_decision`, the
same function as ``distil decide``: the same role checks, the same refusal when the gate changed, signed
where the spec sets keys. The project is loaded afresh for every request, so a page always shows the
ledger and the spec as they are now.

On loopback the app is open; bound anywhere else it needs a key (:func:`require_safe_binding`), given as
``Authorization: Bearer KEY``, an ``X-API-Key`` header, or once through ``/login`` (kept in a cookie).
A form token issued per app start guards the sign-off against a form posted from another site.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from distil.errors import DistilError, ReviewError, RoleError, RunError
from distil.evaluate.report import fmt
from distil.review import views

HERE = Path(__file__).parent
KEY_COOKIE = "distil_review_key"
OPEN_PATHS = ("/login", "/static/", "/healthz")
OUTCOMES = ("ship", "iterate", "kill")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_safe_binding(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without a key: the pages show the evaluation items and the sign-off acts."""
    if not is_loopback(host) and not api_key:
        raise ReviewError(f"--host {host}: the review app is bound beyond loopback without a key")


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items()}


def create_app(spec: Path | None = None, api_key: str | None = None) -> FastAPI:
    """The review app for the project whose spec is ``spec`` (default ./distil.yaml)."""
    from distil.spec.io import load_project

    app = FastAPI(title="distil review", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(fmt=fmt, quote=quote)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    form_token = secrets.token_urlsafe(24)

    def page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        project_name = context.pop("_project_name", "")
        return templates.TemplateResponse(
            request, template, {"project_name": project_name, "nav": template, **context}, status_code=status
        )

    def project():
        return load_project(spec)

    def failed(request: Request, exc: DistilError) -> HTMLResponse:
        status = 404 if isinstance(exc, RunError) else 409
        return page(request, "error.html", {"message": exc.message, "hint": exc.hint}, status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if api_key and not request.url.path.startswith(OPEN_PATHS):
            given = request.headers.get("x-api-key") or request.cookies.get(KEY_COOKIE) or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
                return Response("a key is needed: Authorization: Bearer KEY", status_code=401)
        response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
        )
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query parameter's name
        return page(request, "login.html", {"next": next if next.startswith("/") else "/", "wrong": False})

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        target = form.get("next", "/") if form.get("next", "/").startswith("/") else "/"
        if not api_key or hmac.compare_digest(form.get("key", "").encode(), api_key.encode()):
            response = RedirectResponse(target, status_code=303)
            if api_key:
                response.set_cookie(KEY_COOKIE, api_key, httponly=True, samesite="strict")
            return response
        return page(request, "login.html", {"next": target, "wrong": True}, 401)

    @app.get("/", response_class=HTMLResponse)
    def project_page(request: Request) -> HTMLResponse:
        try:
            p = project()
            return page(request, "project.html", {"_project_name": p.spec.name, **views.project_view(p)})
        except DistilError as exc:
            return failed(request, exc)

    @app.get("/rounds", response_class=HTMLResponse)
    def rounds_page(request: Request) -> HTMLResponse:
        try:
            p = project()
            return page(request, "rounds.html", {"_project_name": p.spec.name, **views.rounds_view(p)})
        except DistilError as exc:
            return failed(request, exc)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        try:
            p = project()
            return page(request, "run.html", {"_project_name": p.spec.name, **views.run_view(p, run_id)})
        except DistilError as exc:
            return failed(request, exc)

    @app.get("/disagreements")
    def latest_disagreements(request: Request) -> Response:
        try:
            runs = views.evaluated_runs(project())
        except DistilError as exc:
            return failed(request, exc)
        if not runs:
            return failed(request, RunError("no evaluated run yet", hint="run `distil evaluate` first"))
        return RedirectResponse(f"/runs/{quote(runs[0])}/disagreements", status_code=303)

    @app.get("/runs/{run_id}/disagreements", response_class=HTMLResponse)
    def disagreements_page(request: Request, run_id: str, slice: str = "", q: str = "") -> HTMLResponse:  # noqa: A002
        try:
            p = project()
            return page(
                request,
                "disagreements.html",
                {"_project_name": p.spec.name, **views.disagreements_view(p, run_id, slice, q)},
            )
        except DistilError as exc:
            return failed(request, exc)

    def signoff(
        request: Request,
        run: str | None,
        error: str = "",
        hint: str = "",
        recorded: int | None = None,
        status: int = 200,
        form: dict[str, str] | None = None,
    ) -> HTMLResponse:
        p = project()
        context = views.signoff_view(p, run)
        return page(
            request,
            "signoff.html",
            {
                "_project_name": p.spec.name,
                **context,
                "error": error,
                "hint": hint,
                "recorded": recorded,
                "form_token": form_token,
                "form": form or {},
                "outcomes": OUTCOMES,
            },
            status,
        )

    @app.get("/signoff", response_class=HTMLResponse)
    def signoff_page(request: Request, run: str | None = None, recorded: int | None = None) -> HTMLResponse:
        try:
            return signoff(request, run, recorded=recorded)
        except DistilError as exc:
            return failed(request, exc)

    @app.post("/signoff", response_class=HTMLResponse)
    async def signoff_post(request: Request) -> Response:
        from distil.decide import record_decision
        from distil.spec.names import person_name

        form = _form(await request.body())
        if not hmac.compare_digest(form.get("token", "").encode(), form_token.encode()):
            return Response("the form is out of date: reload the sign-off page", status_code=403)
        run_id = form.get("run_id") or None
        try:
            try:
                who = person_name(form.get("name", ""), "name")
            except ValueError as exc:
                raise RoleError(str(exc)) from None
            if not who:
                raise RoleError("name: who is signing? give the validator's name")
            chosen = form.get("decision") or None
            _, _, event = record_decision(project(), who, run_id, chosen=chosen, note=form.get("reason", ""))
        except DistilError as exc:
            try:
                return signoff(request, run_id, error=exc.message, hint=exc.hint, status=409, form=form)
            except DistilError as again:
                return failed(request, again)
        return RedirectResponse(f"/signoff?run={quote(event.payload['run_id'])}&recorded={event.seq}", status_code=303)

    @app.get("/after-launch", response_class=HTMLResponse)
    def after_launch_page(request: Request) -> HTMLResponse:
        try:
            p = project()
            return page(request, "after_launch.html", {"_project_name": p.spec.name, **views.after_launch_view(p)})
        except DistilError as exc:
            return failed(request, exc)

    return app


def serve_review(spec: Path | None, host: str = "127.0.0.1", port: int = 8100, api_key: str | None = None) -> None:
    """Run the review app with uvicorn until interrupted."""
    import uvicorn

    require_safe_binding(host, api_key)
    uvicorn.run(create_app(spec, api_key), host=host, port=port, log_level="warning")
