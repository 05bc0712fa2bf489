"""/docs (Swagger UI) and /redoc with their assets served by the app itself.

FastAPI's own pages load Swagger UI, ReDoc and a favicon from public CDNs, so
on a machine without internet (or behind a proxy that blocks them) the pages
stay blank. The assets come instead from the pinned `fastapi-offline`
package, which ships swagger-ui-dist and ReDoc bundles, and are mounted under
ASSETS_URL.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS_URL = "/docs/assets"
ASSETS_DIR = files("fastapi_offline") / "static"


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc; the app must be built with docs_url=redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_URL}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request), title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"), oauth2_redirect_url=None,
            # the bearer token entered under "Authorize" survives a page reload; no
            # validator badge, which would send the document to a public service
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request), title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"), with_google_fonts=False)
