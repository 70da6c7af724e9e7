"""The demo function of the upload path: a thumbnail of an uploaded image."""

from functions.thumbnail.handler import handle
from functions.thumbnail.models import ThumbnailInput

__all__ = ["ThumbnailInput", "handle"]
