"""`python -m cli`: the `deepfaas` command without its console script."""

from cli.main import main

main()
