"""HTTP routes of the inspection service (FastAPI), over any gateway that does the work.

POST /v1/inspect             multipart: image file + domain, line, frame_id [, store] -> InspectionResult
POST /v1/inspect/batch       multipart: manifest JSON + N prepared frames or images -> per-frame outcomes,
                             maps at model resolution, nothing stored
                             (services/protocol/batch.py; the HTTP path of the Kafka consumer)
GET  /v1/model               the input size S prepared frames must have, and the model version
GET  /v1/domains             current records of every registered domain
GET  /v1/domains/{name}      one domain's current record
POST /v1/domains             register (or replace) a domain from an s3:// prefix of normal images
GET  /healthz                liveness and the deployments the ingress routes to
GET  /metrics                Prometheus text

Every /v1 route needs a bearer token (services/auth.py): scope `inspect` for /v1/inspect* and /v1/model, `read` for the
GETs, `admin` to change a domain. /healthz and /metrics are open: probes and Prometheus scrapers carry no
token, neither route changes state or returns frame data, /metrics labels are bounded to registered
domains (services/metrics.py), and the chart's NetworkPolicy decides who reaches the port at all.

Limits: a body above max_upload_bytes gets 413 from its Content-Length before a byte is read (or as soon as
an undeclared body passes the limit), a batch above max_batch_frames images gets 413; pixel and side limits
are the consumer's decode limits (services/imaging/decoding.py).

Failure answers: 400 bad input, 401/403 auth, 404 unknown domain, 413 too large, 422 schema or a frame the
detector rejected (final), 503 with Retry-After for infrastructure trouble (replica lost, timeout,
overload): retry the same request later.
"""
from __future__ import annotations

import json
import logging
from typing import Protocol

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope as AsgiScope, Send

from model import InvalidImageError
from services.protocol.batch import (
    BATCH_ROUTE,
    IMAGES_PART,
    MANIFEST_PART,
    MODEL_ROUTE,
    BatchFrame,
    BatchInspectionResponse,
    BatchManifest,
    ModelInfo,
)
from services.auth import TOKEN_COOKIE, Principal, Scope, TokenAuthority, Unauthenticated
from services.protocol.messages import NAME_PATTERN, InspectionResult
from services.metrics import InspectionMetrics
from services.registry.records import DomainRecord, RegistryError, UnknownDomainError
from services.imaging.decoding import ImageDecodeError
from services.serving.settings import ServingSettings

logger = logging.getLogger(__name__)


class InspectionRejected(RuntimeError):
    """The detector refused the frame for a reason of its own (its image or its domain): final, 422."""


class InspectionRetryLater(RuntimeError):
    """Infrastructure trouble (a replica lost, a timeout, overload): nobody's input fault; 503 + Retry-After."""


class DomainRegistration(BaseModel):
    """Body of POST /v1/domains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Domain name (lowercase letters, digits, '-').")
    class_name: str = Field(min_length=1, description="Product name used in the text prompts, e.g. 'capsule'.")
    images_uri: str = Field(pattern=r"^s3://", description="s3:// prefix holding the K normal reference images.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Fixed threshold; calibrated when absent.")


class InspectionGateway(Protocol):
    """What the routes need; the Serve ingress deployment implements it."""

    metrics: InspectionMetrics

    async def inspect_upload(self, domain: str, line: str, frame_id: str, image: bytes, store: bool) -> InspectionResult: ...


    async def inspect_batch(self, frames: list[BatchFrame], images: list[bytes]) -> BatchInspectionResponse: ...

    async def model_info(self) -> ModelInfo: ...

    async def list_domains(self) -> list[DomainRecord]: ...

    async def show_domain(self, name: str) -> DomainRecord: ...

    async def register_domain(self, registration: DomainRegistration, actor: str) -> DomainRecord: ...

    async def health(self) -> dict[str, object]: ...


class BodySizeLimit:
    """ASGI middleware: 413 for a request body above `max_bytes`, decided before the body is read.

    A declared Content-Length above the limit is answered at once. A body without one (chunked) is counted
    as it arrives; past the limit the app is told the client left, and its answer is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_bytes):
            await self._refuse(send, f"request body of {declared.decode(errors='replace')} bytes")
            return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app says about a cut-off body, the answer is the 413 below
            started = True
            await send(message)

        try:
            await self._app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, f"request body of more than {received} bytes")

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps({"detail": f"{what} exceeds the limit of {self._max_bytes} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class TokenGate:
    """ASGI middleware: 401 for a /v1 request without a valid token, before its body is read.

    FastAPI reads (and parses) a request's body before it runs the route's dependencies, so without this an
    anonymous client could make the ingress take uploads up to the size limit. Scopes (403) are still the
    routes' dependencies; this only checks that the token is one of the configured ones.
    """

    def __init__(self, app: ASGIApp, authority: TokenAuthority) -> None:
        self._app = app
        self._authority = authority

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        # Under a route prefix (a Serve app at /fragile) the path may carry the root path first.
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope["type"] == "http" and path.startswith("/v1/"):
            connection = HTTPConnection(scope)
            scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
            token = credentials if scheme.lower() == "bearer" else connection.cookies.get(TOKEN_COOKIE)
            try:
                self._authority.authenticate(token)
            except Unauthenticated as error:
                body = json.dumps({"detail": f"authentication required: {error}"}).encode()
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"), (b"connection", b"close")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


def create_http_app(gateway: InspectionGateway, authority: TokenAuthority, serving: ServingSettings) -> FastAPI:
    """The FastAPI app with auth, limits and the failure answers of the module docstring."""
    app = FastAPI(title="inctrl-stream inspection API", version="1")
    app.add_middleware(BodySizeLimit, max_bytes=serving.max_upload_bytes)
    app.add_middleware(TokenGate, authority=authority)  # added last, so it runs first
    read, inspect_scope, admin = (Depends(authority.require(scope)) for scope in (Scope.READ, Scope.INSPECT, Scope.ADMIN))
    retry_after = {"Retry-After": str(serving.retry_after_s)}

    @app.exception_handler(UnknownDomainError)
    async def unknown_domain(_: Request, error: UnknownDomainError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(error)})

    @app.exception_handler(RegistryError)
    async def bad_registration(_: Request, error: RegistryError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(error)})

    @app.exception_handler(ImageDecodeError)
    @app.exception_handler(InvalidImageError)
    async def bad_image(_: Request, error: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": f"image rejected: {error}"})

    @app.exception_handler(ValidationError)
    async def bad_fields(_: Request, error: ValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": error.errors(include_url=False, include_context=False)})

    @app.exception_handler(InspectionRejected)
    async def rejected(_: Request, error: InspectionRejected) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(error)})

    @app.exception_handler(InspectionRetryLater)
    async def retry_later(_: Request, error: InspectionRetryLater) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(error)}, headers=retry_after)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette middleware signature
        response = await call_next(request)
        route = request.scope.get("route")
        gateway.metrics.http_requests.labels(route=getattr(route, "path", "unmatched"), status=str(response.status_code)).inc()
        return response

    @app.post("/v1/inspect", response_model=InspectionResult, dependencies=[inspect_scope])
    async def inspect(
        image: UploadFile = File(..., description="Encoded image file (PNG, JPEG, ...)."),
        domain: str = Form(..., pattern=NAME_PATTERN),
        line: str = Form(..., pattern=NAME_PATTERN),
        frame_id: str = Form(..., pattern=NAME_PATTERN),
        store: bool = Form(True, description="Write result.json, map.png and overlay.jpg to the results bucket."),
    ) -> InspectionResult:
        data = await image.read()
        return await gateway.inspect_upload(domain, line, frame_id, data, store)

    @app.post(BATCH_ROUTE, response_model=BatchInspectionResponse, dependencies=[inspect_scope])
    async def inspect_batch(
        manifest: str = Form(..., alias=MANIFEST_PART, description="BatchManifest JSON: domain, line, frame_id per image."),
        images: list[UploadFile] = File(
            ..., alias=IMAGES_PART, description="Per frame, in manifest order: prepared float16 pixels or an encoded image file."
        ),
    ) -> BatchInspectionResponse | JSONResponse:
        if len(images) > serving.max_batch_frames:
            detail = f"{len(images)} images exceed the limit of {serving.max_batch_frames} per batch"
            return JSONResponse(status_code=413, content={"detail": detail})
        parsed = BatchManifest.model_validate_json(manifest)
        if len(images) != len(parsed.frames):
            detail = f"manifest lists {len(parsed.frames)} frames but {len(images)} image parts were sent"
            return JSONResponse(status_code=422, content={"detail": detail})
        data = [await image.read() for image in images]
        return await gateway.inspect_batch(parsed.frames, data)

    @app.get(MODEL_ROUTE, response_model=ModelInfo, dependencies=[inspect_scope])
    async def model_info() -> ModelInfo:
        return await gateway.model_info()

    @app.get("/v1/domains", response_model=list[DomainRecord], dependencies=[read])
    async def list_domains() -> list[DomainRecord]:
        return await gateway.list_domains()

    @app.get("/v1/domains/{name}", response_model=DomainRecord, dependencies=[read])
    async def show_domain(name: str) -> DomainRecord:
        return await gateway.show_domain(name)

    @app.post("/v1/domains", response_model=DomainRecord, status_code=201)
    async def register_domain(registration: DomainRegistration, principal: Principal = admin) -> DomainRecord:
        return await gateway.register_domain(registration, principal.subject)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return await gateway.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=InspectionMetrics.content_type)

    return app
