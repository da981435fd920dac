"""The agent page in a real headless Chromium against a real server on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from ctiserver.calls.model import CallInfo
from tests.fixtures_services import WebStack

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def until(check, within: float = 5.0):
    """Poll an async check with a deadline."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)  # poll interval


async def test_agent_signs_in_goes_ready_sees_pop_and_records_disposition(tmp_path: Path) -> None:
    async with (
        WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(stack.base)
            await page.get_by_label("User").fill("1001")
            await page.get_by_label("Password").fill("demo-1001")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#state")).to_have_text("Not ready (login)")
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(page.locator("#state")).to_have_text("Ready")
            assert stack.control.agents["1001"]["state"] == "ready"
            await expect(page.locator("#link")).to_have_text("connected")

            call = CallInfo(
                call_id="1731000000.42",
                caller_id="+34915551234",
                dnis="+34910000000",
                queue="support",
                digits="2",
                answers={"reason": "billing"},
                joined_at=time.time() - 42,
            )
            await stack.control.offer(call, "1001")
            card = page.locator("#card")
            await expect(card.get_by_role("heading", name="Ana López")).to_be_visible()
            await expect(card).to_contain_text("gold")
            await expect(card).to_contain_text("+34910000000")
            await expect(card).to_contain_text("Router replaced")  # last interactions
            await expect(card.get_by_role("link", name="Open in the CRM")).to_have_attribute(
                "href", "https://crm.example/search?phone=%2B34915551234"
            )
            await expect(page.locator("#partial")).to_be_hidden()
            await expect(page.locator("#state")).to_have_text("Ringing")

            async def acked():
                rows = await stack.store.pop_deliveries("1731000000.42")
                return rows and rows[0].acknowledged_at is not None

            await until(acked)

            await stack.control.answer(call.call_id, "1001")
            await expect(page.locator("#state")).to_have_text("On call")
            await page.screenshot(path="/tmp/ctiserver-agent-pop.png", full_page=True)

            # a reload mid-call shows the call again
            await page.reload()
            await expect(
                page.locator("#card").get_by_role("heading", name="Ana López")
            ).to_be_visible()

            await stack.control.hang_up(call.call_id, "1001")
            await expect(page.locator("#state")).to_have_text("Wrap-up")
            await page.get_by_label("Outcome").select_option("sale")
            await page.get_by_label("Call notes").fill("Upgraded to 1 Gb fibre")
            await page.get_by_role("button", name="Save disposition").click()
            await expect(page.locator("#dispo-status")).to_have_text("Saved.")
            rec = await stack.store.get_interaction(call.call_id)
            assert rec is not None
            assert (rec.disposition, rec.notes, rec.agent_id) == (
                "sale",
                "Upgraded to 1 Gb fibre",
                "1001",
            )
            assert rec.talk_seconds is not None and rec.wait_seconds is not None
            assert errors == []
        finally:
            await browser.close()


async def test_unknown_caller_is_created_from_the_page(tmp_path: Path) -> None:
    async with (
        WebStack(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}") as stack,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(stack.base)
            await page.get_by_label("User").fill("1002")
            await page.get_by_label("Password").fill("demo-1002")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#link")).to_have_text("connected")
            await stack.control.offer(
                CallInfo("c-unknown", "+34932000111", queue="sales", joined_at=time.time()), "1002"
            )
            unknown = page.get_by_role("heading", name="Unknown caller", exact=True)
            await expect(unknown).to_be_visible()
            number = page.get_by_label("Phone number", exact=True)
            await expect(number).to_have_value("+34932000111")
            await page.get_by_label("Name", exact=True).fill("Nuevo Cliente")
            await page.get_by_role("button", name="Create customer").click()
            await expect(
                page.locator("#card").get_by_role("heading", name="Nuevo Cliente")
            ).to_be_visible()
            await page.screenshot(path="/tmp/ctiserver-agent-unknown.png", full_page=True)
            found = await stack.store.find_customers_by_number("0034932000111")
            assert [c.name for c in found] == ["Nuevo Cliente"]
        finally:
            await browser.close()
