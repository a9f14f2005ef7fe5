"""An OTLP endpoint that refuses spans or is not there costs a warning, nothing more: the
agent's spans still reach the bus (and so the store), and the collector gets them again
once it takes them."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from agents.recorder.agent import Recorder
from agents.settings import Settings
from agents.spans import work_span
from agents.tracing import traced
from bus import Bus
from bus import constants as c
from store.errors import StoreError
from store.reader import Reader
from tests.helpers import Running, stream_holds, wait_until
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

WARNING = "takes no spans; they are dropped"
# A span as the shipper writes it, for a message made by hand.
SPAN = {
    "trace_id": "0" * 31 + "1", "parent_id": None, "name": "by-hand", "kind": "internal",
    "start": "2026-12-04T10:00:00+00:00", "end": "2026-12-04T10:00:01+00:00",
    "status": "ok", "status_message": None, "ticket": "HAND", "task": None, "attributes": {},
}  # fmt: skip


class Shipped:
    """The span names a plain subscriber sees on the agent's span subject (a JSON object
    a line, several lines a message)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.messages = 0

    async def on_msg(self, msg: Msg) -> None:
        self.messages += 1
        self.names += [json.loads(line)["name"] for line in msg.data.splitlines()]

    async def has(self, count: int) -> bool:
        return len(self.names) >= count


@pytest.fixture
async def shipped(bus: Bus) -> AsyncIterator[Shipped]:
    seen = Shipped()
    sub = await bus.nc.subscribe(c.span_subject("worker", "w-otlp"), cb=seen.on_msg)
    yield seen
    await sub.unsubscribe()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agents.tracing"]


async def test_a_collector_that_refuses_spans_is_one_warning_and_the_bus_has_them_all(
    bus: Bus, settings: Settings, shipped: Shipped, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = OtlpReceiver().start()
    receiver.status = 400
    with_otlp = settings.model_copy(update={"otlp_endpoint": receiver.url})
    try:
        with caplog.at_level(logging.INFO, logger="agents.tracing"):
            async with traced(bus, with_otlp, "worker", "w-otlp") as provider:
                assert provider is not None
                for name in ("refused-1", "refused-2"):  # two batches, both refused
                    with work_span(name, ticket="OT"):
                        pass
                    await asyncio.to_thread(provider.force_flush)
                receiver.status = 200
                with work_span("taken", ticket="OT"):
                    pass
                await asyncio.to_thread(provider.force_flush)
                await wait_until(lambda: shipped.has(3))
    finally:
        receiver.stop()
    said = warnings(caplog)
    assert [m for m in said if WARNING in m] == [
        f"the OTLP endpoint {receiver.url}/v1/traces {WARNING}"
    ]
    assert any("takes spans again" in m for m in said)
    assert [s.name for s in receiver.spans] == ["taken"]  # what was refused is dropped there
    assert shipped.names == ["refused-1", "refused-2", "taken"]  # and never on the bus


async def test_an_endpoint_that_is_down_does_not_hold_up_the_agent_or_its_spans(
    bus: Bus, settings: Settings, shipped: Shipped, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    with_otlp = settings.model_copy(update={"otlp_endpoint": down})
    with caplog.at_level(logging.INFO, logger="agents.tracing"):
        async with traced(bus, with_otlp, "worker", "w-otlp"):
            with work_span("while-down", ticket="OT"):
                pass
            # The span is on the bus while the exporter still retries on its own thread.
            await wait_until(lambda: shipped.has(1))
        # Leaving waits for the last export to give up (OTLP_TIMEOUT_S), then says so.
    assert shipped.names == ["while-down"]
    assert [m for m in warnings(caplog) if WARNING in m] == [
        f"the OTLP endpoint {down}/v1/traces {WARNING}"
    ]


async def test_spans_go_many_to_a_message_and_the_recorder_stores_each_line(
    bus: Bus, settings: Settings, shipped: Shipped, running: Running
) -> None:
    async with traced(bus, settings, "worker", "w-otlp"):
        for i in range(200):
            with work_span(f"s{i}", ticket="PK"):
                pass
        await wait_until(lambda: shipped.has(200))
    assert shipped.names == [f"s{i}" for i in range(200)]
    assert shipped.messages < 20  # packed: ~500 bytes a span, 64 KiB a message

    # A message with a line that is no span: the others are stored, it is dead-lettered.
    good = json.dumps({**SPAN, "span_id": "00000000000000aa"}).encode()
    also = json.dumps({**SPAN, "span_id": "00000000000000bb"}).encode()
    await bus.nc.publish(c.span_subject("worker", "w-hand"), b"\n".join([good, b"{oops", also]))
    await running.start(Recorder(bus, settings))
    reader = Reader(settings.published_dir, refresh_s=0.1)

    async def stored() -> int:
        try:
            rows = reader.query("SELECT count(*) FROM spans WHERE ticket_id IN ('PK', 'HAND')")
        except StoreError:
            return 0
        return int(rows.rows[0][0]) if rows.rows[0][0] == 202 else 0

    await wait_until(stored, timeout=30)
    await wait_until(lambda: stream_holds(bus, c.DLQ_STREAM, 1))
    letter = await bus.js.get_last_msg(c.DLQ_STREAM, c.dlq_subject("spans"))
    assert letter.data == b"{oops" and letter.headers is not None
    assert letter.headers[c.HDR_ERROR_CATEGORY] == "invalid_span"
