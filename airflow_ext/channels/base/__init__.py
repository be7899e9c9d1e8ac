"""What every channel shares: ``robot.py`` (the HTTP pool, rendering to a channel's limits, the send
and its errors, the robot key), ``fake.py`` (the local robots' server, failure modes and inbox page)
and ``preview.py`` (HTML escaping, markdown and links for the message previews).

Importing this package imports none of them: a fake robot, standard library only, must not pull
in the robot's HTTP client. :func:`robot_names` gives each channel's package the same manners.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Callable


def robot_names(package: str, package_path: Iterable[str], load_robot: Callable[[], ModuleType]):
    """``__getattr__`` and ``__dir__`` for a channel's package: its names are its robot module's,
    imported when first asked for (``airflow_ext.channels.wecom.WeComRobot``), so that importing the
    channel's fake or preview does not import the robot."""
    submodules = frozenset(module.name for module in pkgutil.iter_modules(list(package_path)))

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or name in submodules:
            # Python's own questions; and ``from <package> import fake`` asks for the attribute
            # before it imports the submodule: the robot has no business being imported for either
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return getattr(load_robot(), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        return sorted(set(dir(load_robot())) | submodules)

    return __getattr__, __dir__
