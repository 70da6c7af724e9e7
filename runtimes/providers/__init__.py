"""Providers: where runtimes run (this machine, Kubernetes, OpenWhisk), behind one `Provider`
contract."""
