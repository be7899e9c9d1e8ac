"""One module per chat channel: its message format, limits, signing and error codes."""

from __future__ import annotations

#: The robot class of each channel, by module.
ROBOT_CLASSES = {
    "dingtalk": "DingTalkRobot",
    "wecom": "WeComRobot",
    "feishu": "FeishuRobot",
    "slack": "SlackRobot",
}


def robot_for(settings):
    """The channel robot for ``settings`` (:class:`airflow_ext.config.RobotSettings`)."""
    import importlib

    module = importlib.import_module(f"airflow_ext.channels.{settings.channel}")
    return getattr(module, ROBOT_CLASSES[settings.channel])(settings)
