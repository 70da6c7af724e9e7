"""Frames written once per event-loop turn still arrive whole and in order, over a real pipe."""

from __future__ import annotations

import asyncio
import os

from runtimes.sandbox import protocol


async def _pipe() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    reader = asyncio.StreamReader(limit=protocol.MAX_PAYLOAD)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    transport, proto = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", buffering=0)
    )
    return reader, asyncio.StreamWriter(transport, proto, reader, loop)


async def test_frames_of_many_senders_arrive_whole_and_in_order() -> None:
    reader, writer = await _pipe()
    frames = protocol.FrameWriter(writer)
    big = os.urandom(300 << 10)  # past FLUSH_AT, and past a pipe's buffer: back-pressure
    payloads = [f"run {i}".encode() for i in range(200)]
    payloads[77] = big

    async def reading() -> list[tuple[dict[str, object], bytes]]:
        got = []
        for _ in payloads:
            frame = await protocol.read_frame(reader)
            assert frame is not None
            got.append(frame)
        return got

    receiver = asyncio.create_task(reading())
    # all senders start in one turn of the loop, as a fetched batch of runs does
    await asyncio.gather(*(frames.send({"op": "run", "id": i}, p) for i, p in enumerate(payloads)))
    got = await asyncio.wait_for(receiver, 30)
    writer.close()
    assert [header["id"] for header, _ in got] == list(range(len(payloads)))
    assert [payload for _, payload in got] == payloads


async def test_a_closed_pipe_is_an_error_for_the_next_sender() -> None:
    _, writer = await _pipe()
    frames = protocol.FrameWriter(writer)
    writer.close()
    await asyncio.sleep(0)
    failed = False
    for _ in range(3):  # the first write may only find out; a later send says so
        try:
            await frames.send({"op": "run", "id": 1}, b"x")
            await asyncio.sleep(0)
        except (OSError, RuntimeError):
            failed = True
            break
    assert failed
