"""HTTP routes of the inspection service (FastAPI), over any gateway that does the work.

POST /v1/inspect             multipart: image file + domain, line, frame_id [, store] -> InspectionResult
POST /v1/inspect/batch       multipart: manifest JSON + N images -> per-frame outcomes, nothing stored
                             (services/batch_inspection.py; the HTTP path of the Kafka consumer)
GET  /v1/domains             current records of every registered domain
GET  /v1/domains/{name}      one domain's current record
POST /v1/domains             register (or replace) a domain from an s3:// prefix of normal images
GET  /healthz                liveness and the deployments the ingress routes to
GET  /metrics                Prometheus text
"""
from __future__ import annotations

import logging
from typing import Protocol

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model import InvalidImageError
from services.batch_inspection import (
    BATCH_ROUTE,
    IMAGES_PART,
    MANIFEST_PART,
    BatchFrame,
    BatchInspectionResponse,
    BatchManifest,
)
from services.messages import NAME_PATTERN, InspectionResult
from services.metrics import InspectionMetrics
from services.registry import DomainRecord, RegistryError, UnknownDomainError
from services.result_encoding import ImageDecodeError

logger = logging.getLogger(__name__)


class InspectionFailed(RuntimeError):
    """The detector could not score a frame for a reason other than bad input."""


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

    async def list_domains(self) -> list[DomainRecord]: ...

    async def show_domain(self, name: str) -> DomainRecord: ...

    async def register_domain(self, registration: DomainRegistration) -> DomainRecord: ...

    async def health(self) -> dict[str, object]: ...


def create_http_app(gateway: InspectionGateway) -> FastAPI:
    """The FastAPI app; errors map to 400 (bad input), 404 (unknown domain), 422 (schema), 500 (inference)."""
    app = FastAPI(title="inctrl-stream inspection API", version="1")

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

    @app.exception_handler(InspectionFailed)
    async def failed(_: Request, error: InspectionFailed) -> JSONResponse:
        return JSONResponse(status_code=500, content={"detail": str(error)})

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette middleware signature
        response = await call_next(request)
        route = request.scope.get("route")
        gateway.metrics.http_requests.labels(route=getattr(route, "path", "unmatched"), status=str(response.status_code)).inc()
        return response

    @app.post("/v1/inspect", response_model=InspectionResult)
    async def inspect(
        image: UploadFile = File(..., description="Encoded image file (PNG, JPEG, ...)."),
        domain: str = Form(..., pattern=NAME_PATTERN),
        line: str = Form(..., pattern=NAME_PATTERN),
        frame_id: str = Form(..., pattern=NAME_PATTERN),
        store: bool = Form(True, description="Write result.json, map.png and overlay.jpg to the results bucket."),
    ) -> InspectionResult:
        data = await image.read()
        return await gateway.inspect_upload(domain, line, frame_id, data, store)

    @app.post(BATCH_ROUTE, response_model=BatchInspectionResponse)
    async def inspect_batch(
        manifest: str = Form(..., alias=MANIFEST_PART, description="BatchManifest JSON: domain, line, frame_id per image."),
        images: list[UploadFile] = File(..., alias=IMAGES_PART, description="Encoded image files, in manifest order."),
    ) -> BatchInspectionResponse | JSONResponse:
        parsed = BatchManifest.model_validate_json(manifest)
        if len(images) != len(parsed.frames):
            detail = f"manifest lists {len(parsed.frames)} frames but {len(images)} image parts were sent"
            return JSONResponse(status_code=422, content={"detail": detail})
        data = [await image.read() for image in images]
        return await gateway.inspect_batch(parsed.frames, data)

    @app.get("/v1/domains", response_model=list[DomainRecord])
    async def list_domains() -> list[DomainRecord]:
        return await gateway.list_domains()

    @app.get("/v1/domains/{name}", response_model=DomainRecord)
    async def show_domain(name: str) -> DomainRecord:
        return await gateway.show_domain(name)

    @app.post("/v1/domains", response_model=DomainRecord, status_code=201)
    async def register_domain(registration: DomainRegistration) -> DomainRecord:
        return await gateway.register_domain(registration)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return await gateway.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=InspectionMetrics.content_type)

    return app
