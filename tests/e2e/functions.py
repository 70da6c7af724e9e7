"""Source code of the functions the end-to-end tests deploy (inline code, as users send it)."""

HELLO = """
from pydantic import BaseModel


class In(BaseModel):
    name: str
    times: int = 1


def main(inp: In, ctx) -> dict:
    print(f"hello called for {inp.name}")
    ctx.logger.info("activation %s", ctx.activation_id)
    return {"greeting": " ".join(["Hello " + inp.name + "!"] * inp.times), "version": ctx.version}
"""

FAILING = """
def main(params, ctx):
    print("about to fail, attempt", ctx.attempt)
    raise ValueError("boom: " + str(params.get("why", "no reason")))
"""

SLEEPY = """
import asyncio
import time


async def main(params: dict, ctx) -> dict:
    await asyncio.sleep(params.get("s", 0))
    return {"slept": params.get("s", 0)}


def blocking(params: dict, ctx) -> dict:
    time.sleep(params.get("s", 0))
    return {"slept": params.get("s", 0)}
"""

# Each run leaves one object `<tag>/<uuid>` in the bucket it is given (through ctx.storage,
# as a sandboxed function must): the tests count runs by listing it.
RECORDING = """
import asyncio
import time
import uuid


def main(params: dict, ctx) -> dict:
    time.sleep(params.get("s", 0))
    key = params["tag"] + "/" + uuid.uuid4().hex
    asyncio.run(ctx.storage.put(params["bucket"], key, b"ran"))
    return {"tag": params["tag"], "pid_attempt": ctx.attempt}
"""

NOOP = """
def main(params):
    return params
"""
