"""``python -m airflow_ext.fake_robot``: see :func:`airflow_ext.fake_robot.main`."""

from airflow_ext.fake_robot import main

raise SystemExit(main())
