"""A tiny HTTP service, used as ponder's bundled demo corpus."""

from service.config import Settings
from service.retry import with_retries


def create_app(settings: Settings):
    """Build the application object with its routes."""
    routes = {"/health": health, "/orders": list_orders}
    return {"routes": routes, "port": settings.port}


def health():
    return {"status": "ok"}


@with_retries(attempts=3)
def list_orders(db):
    """Orders are read through the retry wrapper because the database drops connections."""
    return db.query("SELECT id, total FROM orders ORDER BY id")
