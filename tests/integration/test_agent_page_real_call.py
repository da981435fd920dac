"""The agent page in headless Chromium, served by the real daemon, with a real call:
sign in, go ready, a sipp caller rings the agent's sipp phone through the sandbox Asterisk,
the pop shows the customer while the phone rings, the disposition lands in the database."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from ctiserver.store import Store
from tests.integration.harness import AgentPhones, CtiServer, place_calls
from tests.integration.pop_clients import AmiWatch
from tests.integration.test_screenpop_asterisk import DNIS, load_demo

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/ctiserver-agent-real-call.png")

QUEUES = textwrap.dedent("""
    [[queues]]
    name = "support"
    strategy = "longest_idle"
    ring_timeout = 10
    wrapup = 30
""")
AGENT = textwrap.dedent("""
    [[agents]]
    id = "1001"
    name = "Lucia Martin"
    queues = ["support"]
""")


async def test_agent_sees_the_caller_while_ringing_and_records_the_disposition(
        asterisk: None, tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path}/crm.db"
    load_demo(db_url)
    cti = CtiServer(tmp_path, queues=QUEUES, agents=AGENT, database_url=db_url).start()
    try:
        async with async_playwright() as pw, AmiWatch() as ami:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1100, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"http://127.0.0.1:{cti.web_port}/")
                await page.get_by_label("User").fill("1001")
                await page.get_by_label("Password").fill("demo-1001")
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("#state")).to_have_text("Not ready (login)")
                await expect(page.locator("#link")).to_have_text("connected")
                await page.get_by_role("button", name="Ready", exact=True).click()
                await expect(page.locator("#state")).to_have_text("Ready")

                # the phone rings for 3 s before the agent picks up
                with AgentPhones(tmp_path, answer_ms=3000, talk_ms=(800, 1000)):
                    sipp = asyncio.create_task(asyncio.to_thread(
                        place_calls, tmp_path, DNIS, callers=[("+34915551234", "Ana Lopez")],
                        maxwait_ms=20000, timeout=40))
                    begin = (await ami.wait_for(lambda e: e.event == "DialBegin", 15,
                                                "agent 1001's phone ringing"))[0]
                    call_id = begin.Uniqueid
                    card = page.locator("#card")
                    await expect(card.get_by_role("heading", name="Ana López")).to_be_visible(
                        timeout=2000)
                    await expect(page.locator("#state")).to_have_text("Ringing")
                    shown_at = time.time()
                    await expect(card).to_contain_text("gold")
                    await expect(card).to_contain_text("Router replaced")  # history
                    await page.screenshot(path=str(SCREENSHOT), full_page=True)
                    answered = await ami.wait_for(
                        lambda e: e.event == "DialEnd" and e.DialStatus == "ANSWER", 15,
                        "the agent answering")
                    assert shown_at < float(answered[0].Timestamp), "pop shown after answer"
                    await expect(page.locator("#state")).to_have_text("On call")
                    result = await sipp
                assert result.successful == 1, result.output

                await expect(page.locator("#state")).to_have_text("Wrap-up", timeout=10000)
                await page.get_by_label("Outcome").select_option("sale")
                await page.get_by_label("Call notes").fill("Upgraded to 1 Gb fibre")
                await page.get_by_role("button", name="Save disposition").click()
                await expect(page.locator("#dispo-status")).to_have_text("Saved.")
                assert errors == []
            finally:
                await browser.close()
        store = Store(db_url)
        try:
            rec = await _until_stored(store, call_id)
        finally:
            await store.close()
        assert (rec.disposition, rec.notes, rec.agent_id, rec.outcome) == (
            "sale", "Upgraded to 1 Gb fibre", "1001", "answered")
        assert rec.customer_id is not None and rec.talk_seconds is not None
    finally:
        assert cti.stop() == 0


async def _until_stored(store: Store, call_id: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        rec = await store.get_interaction(call_id)
        if rec is not None and rec.disposition and rec.ended_at is not None:
            return rec
        assert time.monotonic() < deadline, f"interaction {call_id} not complete: {rec!r}"
        await asyncio.sleep(0.1)  # poll interval, bounded by the deadline
