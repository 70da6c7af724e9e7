"""Every router of the OpenWhisk API, in the order the app mounts them."""

from __future__ import annotations

from gateway.openwhisk import (
    actions,
    activations,
    alarms,
    namespaces,
    packages,
    rules,
    triggers,
    web,
)

ROUTERS = (
    alarms.router,  # before actions: `/whisk.system/alarms/*` is ours, not another namespace's
    namespaces.router,
    actions.router,
    activations.router,
    triggers.router,
    rules.router,
    packages.router,
    web.router,
)
