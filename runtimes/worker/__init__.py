"""The worker: one process hosting one function version (its loop, executor, loader, results)."""
