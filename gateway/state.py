"""What every request handler needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.kv import KVMirror
from eventbus.storage import Storage
from gateway.cache import FunctionCache
from gateway.invoker import Invoker
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings
from runtimes.activations import ActivationStore
from runtimes.catalog.types import Module
from runtimes.specs import FunctionRegistry


@dataclass
class GatewayState:
    """The gateway's connection to the bus and the stores it reads through it."""

    settings: GatewaySettings
    bus: Bus
    registry: FunctionRegistry
    activations: ActivationStore
    cache: FunctionCache
    invoker: Invoker
    metrics: Metrics
    storage: Storage
    #: who owns each bucket (a watched cache)
    buckets: BucketOwners
    #: the catalog's modules (a watched cache: a prediction reads no KV to find its module)
    modules: KVMirror[Module]


def state_of(request: Request) -> GatewayState:
    """The gateway state of the app serving ``request``."""
    state: GatewayState = request.app.state.gateway
    return state
