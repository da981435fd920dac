"""The agent web application (aiohttp) and its WebSocket hub."""

from ctiserver.web.app import make_app
from ctiserver.web.hub import WebSocketHub
from ctiserver.web.ports import AgentControl, AgentControlError

__all__ = ["AgentControl", "AgentControlError", "WebSocketHub", "make_app"]
