"""Local stand-ins for the chat channels' webhooks, for the demo and the tests.

The DingTalk robot is :mod:`airflow_ext.fake_robot`; each other channel's fake subclasses its
:class:`~airflow_ext.fake_robot.FakeRobot` with that channel's paths, checks, answers and limits.
Standard library only: a fake must stay importable without Airflow.
"""

from __future__ import annotations

#: The fake of each channel: ``module:class``, imported when asked for.
FAKES = {
    "dingtalk": "airflow_ext.fake_robot:FakeRobot",
    "wecom": "airflow_ext.fakes.wecom:FakeWeComRobot",
    "feishu": "airflow_ext.fakes.feishu:FakeFeishuRobot",
    "slack": "airflow_ext.fakes.slack:FakeSlackWebhook",
}


def fake_class(channel: str):
    import importlib

    module, _, name = FAKES[channel].partition(":")
    return getattr(importlib.import_module(module), name)
