"""Feishu / Lark custom bot: ``robot.py`` (wire format, limits, signing, codes), ``preview.py`` (its
message as HTML) and ``fake.py`` (a local stand-in of its webhook).

The package answers with ``robot.py``'s names, imported when first asked for (see
:func:`airflow_ext.channels.base.robot_names`).
"""

from __future__ import annotations

from airflow_ext.channels.base import robot_names


def _robot():
    from airflow_ext.channels.feishu import robot

    return robot


__getattr__, __dir__ = robot_names(__name__, __path__, _robot)
