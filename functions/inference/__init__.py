"""The inference function: serves catalog models on uploads and over HTTP."""

from functions.inference.handler import handle
from functions.inference.models import InferenceInput, InferenceOutput

__all__ = ["InferenceInput", "InferenceOutput", "handle"]
