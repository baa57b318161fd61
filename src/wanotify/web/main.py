"""ASGI entry point for uvicorn: ``wanotify.web.main:app``."""

from wanotify.web.app import create_app

app = create_app()
