"""The FastAPI application (no `from __future__ import annotations` here: FastAPI reads the handlers'
annotations, e.g. `request: Request`, at definition): routes, and every error as OpenAI's `{"error": {...}}` body (unknown paths 404, wrong
methods 405, anything unexpected 500 with the server still up)."""
import logging
import time
from typing import Any

from dlm_jax.serving.protocol import APIError
from dlm_jax.serving.server import ServerState, generate

log = logging.getLogger(__name__)


def build_app(state: ServerState) -> Any:
    """The app serving `state`: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    app = FastAPI(title="dlm_jax", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(state, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(state, request, chat=True)

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": state.ctx.model, "object": "model", "created": started,
                                            "owned_by": "dlm_jax", "max_model_len": state.ctx.max_length}]}

    @app.get("/health")
    async def health() -> Any:
        if not state.loop.alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Any:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    _error_handlers(app)
    return app


def _error_handlers(app: Any) -> None:
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(APIError)
    async def api_error(request: Any, e: APIError) -> Any:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, e: HTTPException) -> Any:
        message = {404: f"no route {request.method} {request.url.path}; the routes are /v1/completions, "
                        "/v1/chat/completions, /v1/models, /health, /metrics",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        err = APIError(e.status_code, message, code={404: "not_found", 405: "method_not_allowed"}.get(e.status_code))
        return JSONResponse(err.body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Any, e: Exception) -> Any:
        log.exception("unexpected error serving %s", request.url.path)
        err = APIError(500, f"internal error ({type(e).__name__}: {e}); the server keeps running",
                       type="server_error")
        return JSONResponse(err.body(), status_code=500)
