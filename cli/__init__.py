"""The `deepfaas` command line: a client of the gateway's HTTP API, and the launcher of the
platform's processes. It imports no gateway route and no function: `cli.main` is the tree of
commands, `cli.common` what they share, one module per command group."""
