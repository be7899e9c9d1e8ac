"""A custom [dingbot] ding_bot_backend for the end-to-end tests: appends each alert as a JSON line."""

import json
import os


def write_alert(alert):
    with open(os.environ["DINGBOT_TEST_SINK"], "a", encoding="utf-8") as sink:
        sink.write(json.dumps(alert.to_dict()) + "\n")
    return {"written": True}


def explode(alert):
    raise RuntimeError("custom backend is broken")
