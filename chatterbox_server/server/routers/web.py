"""The web page at `/`: register a voice, type, and hear it while it streams (plain HTML/JS/CSS)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from chatterbox_server.server.routes import Access, route_facts

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
ASSETS_PATH = "/ui"  # the page's scripts and styles; open like the page itself (its API calls carry the key)

router = APIRouter(include_in_schema=False)


@router.get("/")
@route_facts(access=Access.OPEN)  # the page needs no key; its API calls carry one
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def assets() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
