"""The retrain function: a new model version from uploaded data, through the promotion gate."""

from functions.retrain.handler import handle
from functions.retrain.models import RetrainInput, RetrainOutput

__all__ = ["RetrainInput", "RetrainOutput", "handle"]
