"""One folder per chat channel, and what they share.

``channels/<name>/`` holds everything about one channel: ``robot.py`` (its wire format, limits as
named constants, signing, and its codes → retryable, throttled or permanent), ``preview.py`` (its
message as the group's client shows it, as HTML) and ``fake.py`` (a local stand-in of its webhook).
``channels/base/`` is what they share. The package ``airflow_ext.channels.<name>`` answers with its
robot's names (``airflow_ext.channels.dingtalk.DingTalkRobot``).

This module is the registry of channels. It imports none of them: each is imported when asked for,
so that reading a Connection never imports a fake robot or a preview, and a fake never imports a
robot (whose HTTP client and template engine a fake, standard library only, goes without).
"""

from __future__ import annotations

import importlib

#: Every channel, by its folder's name.
CHANNELS = ("dingtalk", "wecom", "feishu", "slack")
#: The robot class in each channel's ``robot.py``.
ROBOT_CLASSES = {
    "dingtalk": "DingTalkRobot",
    "wecom": "WeComRobot",
    "feishu": "FeishuRobot",
    "slack": "SlackRobot",
}
#: The local robot class in each channel's ``fake.py``.
FAKE_CLASSES = {
    "dingtalk": "FakeRobot",
    "wecom": "FakeWeComRobot",
    "feishu": "FakeFeishuRobot",
    "slack": "FakeSlackWebhook",
}


def robot_for(settings):
    """The channel robot for ``settings`` (:class:`airflow_ext.config.RobotSettings`)."""
    module = importlib.import_module(f"airflow_ext.channels.{settings.channel}.robot")
    return getattr(module, ROBOT_CLASSES[settings.channel])(settings)


def fake_class(channel: str):
    """The local robot class of ``channel``."""
    module = importlib.import_module(f"airflow_ext.channels.{channel}.fake")
    return getattr(module, FAKE_CLASSES[channel])


def preview_module(channel: str):
    """The module that draws ``channel``'s messages as HTML (``render_html``); ImportError without
    markdown-it-py."""
    return importlib.import_module(f"airflow_ext.channels.{channel}.preview")
