"""`python -m runtimes --function NAME`: one worker process (what providers start)."""

import os
import sys

# nats-py imports aiohttp at once, for websocket URLs only: ~6 MiB of each worker's private
# memory (USS) that a worker on nats:// or tls:// never uses
if "ws://" not in os.environ.get("DEEPFAAS_NATS_URL", "").lower().replace("wss://", "ws://"):
    sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]

from runtimes.worker.main import main

raise SystemExit(main())
