"""The control plane: the controller loop, its leader lease, invocations waiting for a runtime."""
