"""The Alerts page on Airflow 2.x: a Flask-AppBuilder view under Browse, in Airflow's own layout.

Who may do what is the auth manager's decision, as for Airflow's own pages: reading needs the right
to read DAGs (the alerts shown are those of the DAGs the user may read), acting (retrying dead
letters, sending a test alert) the right to edit Connections, which the robots are (Op and Admin in
the default roles). Airflow's CSRFProtect covers every POST: the forms carry ``csrf_token()``.

Flask-AppBuilder gives a new menu entry's ``menu_access`` to the Admin role only; at the
webserver's first request the default roles that may read DAGs (Viewer, User, Op) are given it too,
once, so they see "Alerts" in the Browse menu.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote

from airflow.www.views import AirflowBaseView
from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import expose

from airflow_ext.outbox.store import OutboxEntry
from airflow_ext.ui import page as alerts_page

log = logging.getLogger(__name__)

MENU_NAME = "Alerts"
MENU_CATEGORY = "Browse"
#: Default roles given menu access to the page at the webserver's first request.
MENU_ROLES = ("Viewer", "User", "Op")

_menu_granted = threading.Event()


def _auth_manager():
    from airflow.www.extensions.init_auth_manager import get_auth_manager

    return get_auth_manager()


def _links() -> alerts_page.Links:
    def task_instance(entry: OutboxEntry) -> str:
        alert = entry.alert
        map_index = f"&map_index={alert.map_index}" if alert.map_index >= 0 else ""
        return (
            f"{request.script_root}/dags/{quote(alert.dag_id)}/grid?dag_run_id={quote(alert.run_id)}"
            f"&task_id={quote(alert.task_id)}{map_index}"
        )

    return alerts_page.Links(
        task_instance=task_instance, log=lambda entry: f"{task_instance(entry)}&tab=logs"
    )


def grant_menu_access(security_manager) -> None:
    """Give the default roles that may read DAGs the menu entry (Admin has it already)."""
    permission = security_manager.get_permission("menu_access", MENU_NAME)
    if permission is None:
        return
    for name in MENU_ROLES:
        role = security_manager.find_role(name)
        if role is not None and permission not in role.permissions:
            security_manager.add_permission_to_role(role, permission)
            log.info("Gave the role %s menu access to %s", name, MENU_NAME)


class DingbotAlertsView(AirflowBaseView):
    """Browse > Alerts."""

    route_base = "/dingbot-alerts"
    default_view = "index"
    template_folder = alerts_page.TEMPLATES

    def create_blueprint(self, appbuilder, *args, **kwargs):
        blueprint = super().create_blueprint(appbuilder, *args, **kwargs)

        @blueprint.before_app_request
        def _grant_menu_once() -> None:
            if _menu_granted.is_set():
                return
            _menu_granted.set()
            try:
                grant_menu_access(appbuilder.sm)
            except Exception:  # the page works without it: only the menu entry is missing
                log.warning(
                    "Could not give %s menu access to %s", ", ".join(MENU_ROLES), MENU_NAME, exc_info=True
                )

        return blueprint

    # -- who may do what --------------------------------------------------------------------------

    def _require_login(self):
        manager = _auth_manager()
        if not manager.is_logged_in():
            return redirect(manager.get_url_login(next_url=request.url))
        # Some DAG, not every DAG: asked with no DAG, the auth manager answers for all of them, and
        # a user with per-DAG permissions would be refused the page that lists those DAGs' alerts.
        if not (manager.is_authorized_dag(method="GET") or self._readable_dag_ids()):
            abort(403)
        return None

    @staticmethod
    def _may_act() -> bool:
        return _auth_manager().is_authorized_connection(method="PUT")

    def _readable_dag_ids(self) -> set[str]:
        return _auth_manager().get_permitted_dag_ids(methods=["GET"])

    # -- pages ------------------------------------------------------------------------------------

    @expose("/")
    def index(self):
        refused = self._require_login()
        if refused is not None:
            return refused
        from airflow_ext.dingbot import outbox_store
        from airflow_ext.outbox.store import now_ms

        data = alerts_page.build_page(
            outbox_store(),
            _links(),
            at_ms=now_ms(),
            dag_id=request.args.get("dag_id"),
            outcome=request.args.get("outcome"),
            readable_dag_ids=sorted(self._readable_dag_ids()),
            route_dag_id=request.args.get("route_dag"),
            route_task_id=request.args.get("route_task"),
            can_act=self._may_act(),
        )
        return self.render_template(
            "dingbot/alerts_fab.html",
            page=data,
            fmt=alerts_page,
            urls={
                "page": url_for(".index"),
                "retry": url_for(".retry"),
                "test": url_for(".send_test"),
            },
            message_css=alerts_page.page_css(),
        )

    def _act(self, action):
        refused = self._require_login()
        if refused is not None:
            return refused
        if not self._may_act():
            abort(403)
        from airflow_ext.dingbot import outbox_store

        try:
            flash(action(outbox_store()), "info")
        except alerts_page.ActionRefused as err:
            flash(str(err), "error")
        except Exception:  # the server log has the traceback; the page never does
            log.exception("Alerts page action failed")
            flash(alerts_page.ACTION_FAILED, "error")
        return redirect(url_for(".index"))

    @expose("/retry", methods=["POST"])
    def retry(self):
        return self._act(
            lambda store: alerts_page.retry_dead(
                store, request.form.get("robot_key", ""), request.form.get("alert_id")
            )
        )

    @expose("/test", methods=["POST"])
    def send_test(self):
        return self._act(lambda store: alerts_page.send_test(store, request.form.get("robot", "")))


def appbuilder_views() -> list[dict]:
    return [{"name": MENU_NAME, "category": MENU_CATEGORY, "view": DingbotAlertsView()}]
