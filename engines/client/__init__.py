"""A typed Python client for the canvas artifact store, sync and async.

    from engines.client import ArtifactClient

    with ArtifactClient("http://127.0.0.1:8010", token, "t_acme", "dev", "p_web") as client:
        record = client.create_preview("c_board1", 7, "preview.png")
        client.content("c_board1", record.id, "fetched.png")

Only httpx and pydantic are needed at run time: importing it loads none of
the server (no FastAPI, SQLAlchemy or boto3). docs/client.md is the reference.
"""

from engines.canvas_artifacts.models import ArtifactList, ArtifactRecord, Lineage, SignedUrl
from engines.client.aio import AsyncArtifactClient
from engines.client.errors import ArtifactError
from engines.client.events import Event
from engines.client.retry import RetryPolicy
from engines.client.sync import ArtifactClient

__all__ = ["ArtifactClient", "ArtifactError", "ArtifactList", "ArtifactRecord",
           "AsyncArtifactClient", "Event", "Lineage", "RetryPolicy", "SignedUrl"]
