"""The `rank` function: rank the sites of the hybrid cloud for a placement."""

from functions.rank.handler import handle, rank
from functions.rank.models import RankInput, RankOutput

__all__ = ["RankInput", "RankOutput", "handle", "rank"]
