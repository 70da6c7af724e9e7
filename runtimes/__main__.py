"""`python -m runtimes --function NAME`: one worker process (what providers start)."""

from runtimes.worker_main import main

raise SystemExit(main())
