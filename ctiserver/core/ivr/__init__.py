"""IVR: flows (menus, digit collection, prompts) and a pure interpreter."""

from ctiserver.core.ivr.flow import Flow, Step, Target, load_flows, parse_flow
from ctiserver.core.ivr.session import (
    Collect,
    Done,
    Instruction,
    IvrError,
    IvrSession,
    Play,
    SayDigits,
)

__all__ = [
    "Collect",
    "Done",
    "Flow",
    "Instruction",
    "IvrError",
    "IvrSession",
    "Play",
    "SayDigits",
    "Step",
    "Target",
    "load_flows",
    "parse_flow",
]
