"""The operator console: server-rendered pages (Jinja2) and a JSON API over the same review operations.

Pages (READ scope to view, REVIEW scope to act; a browser signs in once and keeps its token in the
HTTP-only, SameSite=Strict cookie `inctrl_token`, so a cross-site form cannot act with it):

    GET  /                                    recent frames per domain and line, filters, per-domain
                                              score histogram against the threshold and drift badge
    GET  /frames/{domain}/{line}/{frame_id}   one frame: image, map, overlay, scores, versions, reviews
    GET  /frames/{domain}/{line}/{frame_id}/{overlay|map|image}
                                              result images proxied from S3 (credentials stay here)
    GET  /domains/{domain}                    every registry version, "make current", histogram
    POST /frames/.../mark-normal | /frames/.../confirm-defect | /domains/{domain}/activate   (forms)
    GET  /login, POST /login, POST /logout

API (bearer token or the cookie; JSON in and out):

    GET  /api/v1/frames?domain=&line=&verdict=&since=&until=&limit=
    GET  /api/v1/frames/{domain}/{line}/{frame_id}            frame and its reviews
    POST /api/v1/frames/{domain}/{line}/{frame_id}/mark-normal      {"note": "..."} -> MarkedNormal
    POST /api/v1/frames/{domain}/{line}/{frame_id}/confirm-defect   {"note": "..."} -> ConfirmedDefect
    GET  /api/v1/domains/{domain}/versions
    POST /api/v1/domains/{domain}/activate                    {"version": N} -> DomainRecord
    GET  /healthz                                             no token

Image objects are read by the keys the index row holds, never by a key from the request, so a token
holder can see only result objects of indexed frames. Times in filters are UTC; a time without offset is
read as UTC.
"""
from __future__ import annotations

import logging
import mimetypes
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from pydantic import BaseModel, ConfigDict, Field

from services.auth import TOKEN_COOKIE, Principal, Scope, TokenAuthority, Unauthenticated
from services.console.histogram import render_svg, score_histogram
from services.console.images import colour_map_png
from services.console.originals import OriginalImageMissing, OriginalImages
from services.console.review import AlreadyReferenced, ConfirmedDefect, FrameNotIndexed, MarkedNormal, ReviewService
from services.console.settings import ConsoleSettings
from services.index.repository import DriftLevel, DriftStatus, FrameFilter, IndexedFrame, Review
from services.protocol.messages import InspectionResult, Verdict
from services.storage.object_store import ObjectStore, ObjectStoreUnavailable
from services.registry.records import ConcurrentUpdateError, DomainRecord, RegistryError, UnknownDomainError
from services.imaging.decoding import ImageDecodeError

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE_MAX_AGE_S = 12 * 3600
_SECURITY_HEADERS = {
    # Everything the pages load comes from this app; no scripts at all.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_DONE_MESSAGES = {
    "marked_normal": "Added to the references: {domain} is now at v{version} (threshold recalibrated).",
    "confirmed_defect": "Stored as a labelled defect example for the next training run.",
    "activated": "{domain} v{version} is current again.",
}


class BadFilter(ValueError):
    """A filter parameter that cannot be read (e.g. a malformed time)."""


class ReviewRequest(BaseModel):
    """Body of the API's mark-normal and confirm-defect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str | None = Field(None, max_length=2000)


class ActivateRequest(BaseModel):
    """Body of the API's activate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)


class FrameDetail(BaseModel):
    """GET /api/v1/frames/{domain}/{line}/{frame_id}."""

    model_config = ConfigDict(frozen=True)

    frame: IndexedFrame
    reviews: list[Review]


@dataclass(frozen=True)
class ConsoleServices:
    """The console's collaborators, built by the caller (see services/console/commands.py)."""

    review: ReviewService
    originals: OriginalImages
    store: ObjectStore
    authority: TokenAuthority
    settings: ConsoleSettings


def parse_utc(value: str | None, name: str) -> datetime | None:
    """ISO 8601 (a datetime-local value, or with an offset) -> aware UTC; empty -> None."""
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadFilter(f"{name}={value!r} is not an ISO 8601 time such as 2026-12-01T21:30") from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def frame_filter(domain: str | None, line: str | None, verdict: str | None, since: str | None, until: str | None) -> FrameFilter:
    """Query parameters (empty strings meaning "any") -> FrameFilter."""
    if verdict and verdict not in {v.value for v in Verdict}:
        raise BadFilter(f"verdict={verdict!r} must be one of {sorted(v.value for v in Verdict)}")
    start, end = parse_utc(since, "since"), parse_utc(until, "until")
    if start is not None and end is not None and start >= end:
        raise BadFilter(f"since ({start.isoformat()}) must lie before until ({end.isoformat()})")
    return FrameFilter(domain=domain or None, line=line or None, verdict=Verdict(verdict) if verdict else None, since=start, until=end)


def worst_drift(statuses: list[DriftStatus]) -> DriftStatus | None:
    """The reading a domain's badge shows: a drifting line first (highest PSI), else the highest PSI, else any."""
    rank = {DriftLevel.DRIFTING: 0, DriftLevel.OK: 1, DriftLevel.INSUFFICIENT: 2}
    return min(statuses, key=lambda s: (rank[s.level], -(s.statistic or 0.0)), default=None)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: '/x' yes, '//evil.example' or 'https://...' no (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@pass_context
def _path_for(context: dict[str, Any], name: str, /, **params: Any) -> str:
    """Links as absolute paths (no scheme or host): right behind any proxy that rewrites the Host header."""
    return context["request"].url_for(name, **params).path


def create_console_app(services: ConsoleServices) -> FastAPI:
    """The console app over injected collaborators."""
    # No Swagger/ReDoc pages: they load their scripts from a CDN. The schema stays at /openapi.json.
    app = FastAPI(title="inctrl inspection console", version="1", docs_url=None, redoc_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["path_for"] = _path_for
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    review, originals, settings = services.review, services.originals, services.settings
    index, registry = review.index, review.registry
    read = Depends(services.authority.require(Scope.READ))
    act = Depends(services.authority.require(Scope.REVIEW))

    def page(request: Request, name: str, principal: Principal | None, status: int = 200, **context: Any) -> Response:
        done, version = request.query_params.get("done"), request.query_params.get("version", "")
        message = None
        if done in _DONE_MESSAGES:  # fixed texts: a crafted link can only pick one and a version number
            message = _DONE_MESSAGES[done].format(
                domain=request.path_params.get("domain", ""), version=version if version.isdigit() else "?"
            )
        context = {"principal": principal, "message": message, **context}
        return templates.TemplateResponse(request, name, context, status_code=status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette middleware signature
        response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    # ---- errors: JSON under /api, pages elsewhere ------------------------------------------------------

    def failure(request: Request, status: int, title: str, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(status_code=status, content={"detail": detail})
        return page(request, "error.html", None, status=status, status_code=status, title=title, detail=detail)

    errors: dict[type[Exception], tuple[int, str]] = {
        FrameNotIndexed: (404, "frame not found"),
        UnknownDomainError: (404, "domain not registered"),
        OriginalImageMissing: (409, "original image not stored"),
        AlreadyReferenced: (409, "already a reference"),
        ConcurrentUpdateError: (409, "changed meanwhile"),
        ObjectStoreUnavailable: (503, "object store unavailable"),
        RegistryError: (400, "registry refused"),
        ImageDecodeError: (422, "image unreadable"),
        BadFilter: (422, "bad filter"),
    }
    for error_type, (status, title) in errors.items():

        def handler(request: Request, error: Exception, status: int = status, title: str = title) -> Response:
            return failure(request, status, title, str(error))

        app.add_exception_handler(error_type, handler)

    @app.exception_handler(HTTPException)
    async def auth_pages(request: Request, error: HTTPException) -> Response:
        if request.url.path.startswith("/api/") or error.status_code not in (401, 403):
            return await http_exception_handler(request, error)
        if error.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = page(request, "login.html", None, status=401, next=target, error=None)
            response.headers.update(error.headers or {})
            return response
        return page(request, "error.html", None, status=403, status_code=403, title="not allowed", detail=str(error.detail))

    # ---- sign in ----------------------------------------------------------------------------------------

    @app.get("/login", name="login_page")
    def login_page(request: Request, next: str = "/") -> Response:
        return page(request, "login.html", None, next=_safe_next(next), error=None)

    @app.post("/login", name="login")
    def login(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
        try:
            principal = services.authority.authenticate(token)
        except Unauthenticated:
            return page(request, "login.html", None, status=401, next=_safe_next(next), error="That token is not valid.")
        if not principal.allows(Scope.READ):
            return page(request, "login.html", None, status=403, next=_safe_next(next),
                        error=f"{principal.subject} lacks the read scope the console needs.")  # fmt: skip
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict", secure=settings.cookie_secure
        )
        logger.info("console sign-in", extra={"subject": principal.subject})
        return response

    @app.post("/logout", name="logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, httponly=True, samesite="strict", secure=settings.cookie_secure)
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # ---- pages ------------------------------------------------------------------------------------------

    def histogram_svg(domain: str, line: str | None, threshold: float) -> str:
        scores = index.scores(domain, line=line, limit=settings.histogram_frames)
        title = f"{domain}{' ' + line if line else ''}: scores of the last {len(scores)} frames against the threshold"
        return render_svg(score_histogram(scores, threshold, settings.histogram_bins), title)

    @app.get("/", name="frames_page")
    def frames_page(
        request: Request,
        principal: Principal = read,
        domain: str | None = None,
        line: str | None = None,
        verdict: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Response:
        filters = frame_filter(domain, line, verdict, since, until)
        frames = index.recent(filters, limit=settings.page_size)
        records = {record.name: record for record in registry.list()}
        pairs = index.lines()
        drift = defaultdict(list)
        for status in index.drift_statuses():
            drift[status.domain].append(status)
        by_line = {(s.domain, s.line): s for statuses in drift.values() for s in statuses}
        grouped: dict[tuple[str, str], list[IndexedFrame]] = defaultdict(list)
        for frame in frames:
            grouped[(frame.domain, frame.line)].append(frame)
        groups = [
            {"domain": d, "line": l, "frames": fs, "flagged": sum(f.verdict is Verdict.ANOMALOUS for f in fs),
             "drift": by_line.get((d, l))}
            for (d, l), fs in sorted(grouped.items())
        ]  # fmt: skip
        domain_names = sorted(set(records) | {d for d, _ in pairs})
        panels = []
        for name in [filters.domain] if filters.domain else domain_names:
            record = records.get(name)
            if record is not None:
                threshold = record.threshold
            else:  # no longer registered: read its frames against the threshold they were judged by
                latest = index.recent(FrameFilter(domain=name), limit=1)
                threshold = latest[0].threshold if latest else 0.5
            panels.append({"domain": name, "record": record, "drift": worst_drift(drift.get(name, [])),
                           "histogram": histogram_svg(name, filters.line, threshold)})  # fmt: skip
        return page(
            request, "frames.html", principal, filters=filters, groups=groups, panels=panels, domain_names=domain_names,
            line_names=sorted({l for d, l in pairs if filters.domain in (None, d)}),
            since_value=filters.since.strftime("%Y-%m-%dT%H:%M") if filters.since else "",
            until_value=filters.until.strftime("%Y-%m-%dT%H:%M") if filters.until else "",
        )  # fmt: skip

    @app.get("/frames/{domain}/{line}/{frame_id}", name="frame_page")
    def frame_page(request: Request, domain: str, line: str, frame_id: str, principal: Principal = read) -> Response:
        frame = review.frame(domain, line, frame_id)
        try:
            originals.locate(frame)
            original_missing = None
        except OriginalImageMissing as error:
            original_missing = str(error)
        try:
            current: DomainRecord | None = registry.show(domain)
        except UnknownDomainError:
            current = None
        return page(
            request, "frame.html", principal, frame=frame, reviews=index.reviews(domain, line, frame_id),
            current=current, original_available=original_missing is None, original_missing=original_missing,
            can_review=principal.allows(Scope.REVIEW),
        )  # fmt: skip

    @app.get("/frames/{domain}/{line}/{frame_id}/{kind}", name="frame_object")
    def frame_object(
        domain: str, line: str, frame_id: str, kind: Literal["overlay", "map", "image"], principal: Principal = read
    ) -> Response:
        frame = review.frame(domain, line, frame_id)
        if kind == "overlay":
            content, media_type = services.store.get_bytes(frame.bucket, frame.overlay_key), "image/jpeg"
        elif kind == "map":
            # Drawn as the overlay is: the frame's own colour scale and pixel threshold, from its result.json.
            stored = InspectionResult.model_validate_json(services.store.get_bytes(frame.bucket, frame.result_key))
            statistics = stored.map_statistics
            content = colour_map_png(
                services.store.get_bytes(frame.bucket, frame.map_key), statistics.display_range or (0.0, 1.0), statistics.threshold
            )
            media_type = "image/png"
        else:
            bucket, key = originals.locate(frame)
            content = services.store.get_bytes(bucket, key)
            media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        # Result objects of a key never change (a replay rewrites the same frame), so browsers may cache them.
        headers = {"Cache-Control": f"private, max-age={settings.thumbnail_max_age_s}"}
        return Response(content, media_type=media_type, headers=headers)

    @app.get("/domains/{domain}", name="domain_page")
    def domain_page(request: Request, domain: str, principal: Principal = read) -> Response:
        current = registry.show(domain)
        return page(
            request, "domain.html", principal, domain=domain, current=current, versions=review.versions(domain),
            histogram=histogram_svg(domain, None, current.threshold), drift=index.drift_statuses(domain),
            can_review=principal.allows(Scope.REVIEW),
        )  # fmt: skip

    # ---- review forms -----------------------------------------------------------------------------------

    @app.post("/frames/{domain}/{line}/{frame_id}/mark-normal", name="mark_normal_form")
    def mark_normal_form(
        request: Request, domain: str, line: str, frame_id: str, note: Annotated[str, Form()] = "", principal: Principal = act
    ) -> Response:
        outcome = review.mark_normal(domain, line, frame_id, principal.subject, note.strip() or None)
        target = request.url_for("frame_page", domain=domain, line=line, frame_id=frame_id)
        return RedirectResponse(f"{target.path}?done=marked_normal&version={outcome.record.version}", status_code=303)

    @app.post("/frames/{domain}/{line}/{frame_id}/confirm-defect", name="confirm_defect_form")
    def confirm_defect_form(
        request: Request, domain: str, line: str, frame_id: str, note: Annotated[str, Form()] = "", principal: Principal = act
    ) -> Response:
        review.confirm_defect(domain, line, frame_id, principal.subject, note.strip() or None)
        target = request.url_for("frame_page", domain=domain, line=line, frame_id=frame_id)
        return RedirectResponse(f"{target.path}?done=confirmed_defect", status_code=303)

    @app.post("/domains/{domain}/activate", name="activate_form")
    def activate_form(request: Request, domain: str, version: Annotated[int, Form(ge=1)], principal: Principal = act) -> Response:
        record = review.activate(domain, version, principal.subject)
        target = request.url_for("domain_page", domain=domain)
        return RedirectResponse(f"{target.path}?done=activated&version={record.version}", status_code=303)

    # ---- JSON API ---------------------------------------------------------------------------------------

    @app.get("/api/v1/frames", response_model=list[IndexedFrame])
    def api_frames(
        principal: Principal = read,
        domain: str | None = None,
        line: str | None = None,
        verdict: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[IndexedFrame]:
        return index.recent(frame_filter(domain, line, verdict, since, until), limit=limit)

    @app.get("/api/v1/frames/{domain}/{line}/{frame_id}", response_model=FrameDetail)
    def api_frame(domain: str, line: str, frame_id: str, principal: Principal = read) -> FrameDetail:
        return FrameDetail(frame=review.frame(domain, line, frame_id), reviews=index.reviews(domain, line, frame_id))

    @app.post("/api/v1/frames/{domain}/{line}/{frame_id}/mark-normal", response_model=MarkedNormal)
    def api_mark_normal(domain: str, line: str, frame_id: str, body: ReviewRequest, principal: Principal = act) -> MarkedNormal:
        return review.mark_normal(domain, line, frame_id, principal.subject, body.note)

    @app.post("/api/v1/frames/{domain}/{line}/{frame_id}/confirm-defect", response_model=ConfirmedDefect)
    def api_confirm_defect(
        domain: str, line: str, frame_id: str, body: ReviewRequest, principal: Principal = act
    ) -> ConfirmedDefect:
        return review.confirm_defect(domain, line, frame_id, principal.subject, body.note)

    @app.get("/api/v1/domains/{domain}/versions", response_model=list[DomainRecord])
    def api_versions(domain: str, principal: Principal = read) -> list[DomainRecord]:
        return review.versions(domain)

    @app.post("/api/v1/domains/{domain}/activate", response_model=DomainRecord)
    def api_activate(domain: str, body: ActivateRequest, principal: Principal = act) -> DomainRecord:
        return review.activate(domain, body.version, principal.subject)

    return app
