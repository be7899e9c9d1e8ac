"""``[dingding] message_template``: an operator's own layout for single alerts, in Jinja's sandbox.

The template is the operator's; everything it is given comes from the failed task and is data:
escaped for markdown, never compiled or evaluated, so ``{{ ... }}`` in an exception stays text.
The sandbox keeps the template itself away from Python internals and from the configuration.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from airflow_ext.alert import Alert
from airflow_ext.errors import ConfigError
from airflow_ext.render import escape_markdown, link_target, outcome_words

OPTION = "[dingding] message_template"

#: The variables a template can use, for the option's description and error messages.
VARIABLES = ("alert", "header", "error", "traceback", "log_link")

_environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class MessageTemplate:
    """A compiled template; :meth:`render` raises ConfigError naming the option when it cannot."""

    def __init__(self, source: str) -> None:
        try:
            self._template = _environment.from_string(source)
        except TemplateSyntaxError as err:
            raise ConfigError(f"{OPTION} does not compile: {err.message} (line {err.lineno})") from None

    def render(self, alert: Alert, *, header: str, error: str, traceback: str, log_link: str) -> str:
        try:
            text = self._template.render(
                alert=alert_fields(alert), header=header, error=error, traceback=traceback, log_link=log_link
            )
        except Exception as err:  # undefined names, sandbox refusals, a filter raising
            raise ConfigError(
                f"{OPTION} cannot be rendered: {type(err).__name__}: {err} "
                f"(variables: {', '.join(VARIABLES)})"
            ) from None
        return text.strip()


def alert_fields(alert: Alert) -> dict[str, Any]:
    """The alert as the template sees it: every text escaped for markdown."""

    def text(value: str | None) -> str:
        return escape_markdown(value) if value else ""

    return {
        "kind": alert.kind.value,
        "outcome": outcome_words(alert),
        "dag_id": text(alert.dag_id),
        "task_id": text(alert.task_id),
        "run_id": text(alert.run_id),
        "map_index": alert.map_index,
        "try_number": alert.try_number,
        "attempts": alert.attempts_allowed,
        "logical_date": text(alert.logical_date),
        "hostname": text(alert.hostname),
        "log_url": link_target(alert.log_url) if alert.log_url else "",
        "exception_type": text(alert.exception_type),
        "occurred_at": text(alert.occurred_at),
    }
