"""numgate as its doors serve it: the core, with the parts only a door knows wired in (the
NXCloud door words Number Check callbacks). The web app, the CLI, tests and benchmarks open the
core through here; the core itself never imports a door."""

from __future__ import annotations

from typing import Any

from numgate.core import Core, open_core
from numgate.settings import Settings


async def open_gateway(settings: Settings, **kwargs: Any) -> Core:
    from numgate.dialects.nxcloud.numbercheck import NxCallbackRenderer

    return await open_core(settings, renderer=NxCallbackRenderer(), **kwargs)
