"""Settings for the tiny service."""

import os
from dataclasses import dataclass

MAGIC_PORT = 48213


@dataclass
class Settings:
    port: int = int(os.environ.get("SERVICE_PORT", MAGIC_PORT))
    database_url: str = os.environ.get("DATABASE_URL", "sqlite:///orders.db")
    debug: bool = False
