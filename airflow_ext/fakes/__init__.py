"""Local stand-ins for the chat channels' webhooks, for the demo and the tests.

The DingTalk robot is :mod:`airflow_ext.fake_robot`; each other channel's fake subclasses its
:class:`~airflow_ext.fake_robot.FakeRobot` with that channel's paths, checks, answers and limits.
Standard library only: a fake must stay importable without Airflow.
"""
