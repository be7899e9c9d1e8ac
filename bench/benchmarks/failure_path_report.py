"""The failure path's figures as printed: its rows of the side-by-side table, the fan-out table and
where one alert's time goes (``failure_path.py`` measures them)."""

from __future__ import annotations

from harness.environments import PATCHED, UNPATCHED
from harness.lines import Line
from harness.report import ms, table, verdict

from benchmarks.failure_path import HEALTHY_ADDED_MEDIAN_MAX_MS, SILENT_DEADLINE_S, SILENT_SLACK_S, Profile

U, P = UNPATCHED, PATCHED


def checks(res: dict) -> dict[str, bool]:
    hf, fo = res["healthy"], res["fan_out"]
    return {
        "healthy": hf[P]["median_ms"] - hf[U]["median_ms"] <= HEALTHY_ADDED_MEDIAN_MAX_MS,
        # Three robots are held to one robot's target: what a failing task may pay for its alerts.
        "fan_out": fo["median_ms"] - hf[U]["median_ms"] <= HEALTHY_ADDED_MEDIAN_MAX_MS,
        "silent": res["silent"][P]["median_ms"] <= (SILENT_DEADLINE_S + SILENT_SLACK_S) * 1000,
    }


def main_rows(res: dict, line: Line, passed: dict[str, bool]) -> list[list[str]]:
    """Rows of the side-by-side table: figure, unpatched, patched, added, ratio, CI, target, result."""
    hf, sil = res["healthy"], res["silent"]

    def timed_rows(what: str, patched: dict) -> list[list[str]]:
        """median and p99 of a failure path against the unpatched one (no target)."""
        return [
            [
                f"{what}: {stat}",
                ms(hf[U][f"{stat}_ms"]),
                ms(patched[f"{stat}_ms"]),
                f"{patched[f'{stat}_ms'] - hf[U][f'{stat}_ms']:+.1f} ms",
                f"{patched[f'{stat}_ms'] / hf[U][f'{stat}_ms']:.2f}",
                "",
                "",
                "",
            ]
            for stat in ("median", "p99")
        ]

    healthy_rows = timed_rows(f"{line.failure_path}, healthy robot", hf[P])
    healthy_rows[0][6:] = [f"added <= {HEALTHY_ADDED_MEDIAN_MAX_MS:g} ms", verdict(passed["healthy"])]
    silent = f"{line.failure_path}, silent robot ({SILENT_DEADLINE_S:g} s deadline)"
    return [
        *healthy_rows,
        *timed_rows(f"{line.failure_path}, 3 robots (default_conn_id)", res["fan_out"]),
        [
            f"{silent}: median",
            ms(sil[U]["median_ms"]),
            ms(sil[P]["median_ms"]),
            f"{sil[P]['median_ms'] - sil[U]['median_ms']:+,.1f} ms",
            f"{sil[P]['median_ms'] / sil[U]['median_ms']:.0f}",
            "",
            f"patched <= {SILENT_DEADLINE_S + SILENT_SLACK_S:g} s",
            verdict(passed["silent"]),
        ],
        [f"{silent}: max", ms(sil[U]["max_ms"]), ms(sil[P]["max_ms"]), "", "", "", "", ""],
    ]


def fan_out_table(res: dict, line: Line, passed: dict[str, bool]) -> str:
    hf, fo = res["healthy"], res["fan_out"]

    def added_row(stat: str) -> list[str]:
        one = hf[P][f"{stat}_ms"] - hf[U][f"{stat}_ms"]
        three = fo[f"{stat}_ms"] - hf[U][f"{stat}_ms"]
        return [
            f"added time (patched - unpatched): {stat}",
            f"{one:+.1f} ms",
            f"{three:+.1f} ms",
            f"{three / one:.2f}" if one > 0 else "-",
        ]

    median_row, p99_row = added_row("median"), added_row("p99")
    low, high = fo["added_median_ratio_ci"]
    median_row += [
        f"{low:.2f}-{high:.2f}",
        f"3 robots: added median <= {HEALTHY_ADDED_MEDIAN_MAX_MS:g} ms",
        verdict(passed["fan_out"]),
    ]
    low, high = fo["minus_one_robot_median_ci"]
    same_process_row = [
        "3 robots - 1 robot, same patched process: median",
        "",
        f"{fo['minus_one_robot_median_ms']:+.1f} ms",
        "",
        f"{low:+.1f} to {high:+.1f} ms",
        "",
        "",
    ]
    return table(
        [
            f"fan-out, direct backend: {line.failure_path} to 1 robot and to 3 at once",
            "1 robot",
            "3 robots",
            "3 / 1",
            "95% CI",
            "target",
            "result",
        ],
        [median_row, [*p99_row, "", "", ""], same_process_row],
    )


def breakdown_table(res: dict, line: Line) -> str:
    parts = res["breakdown"]
    labels = {
        "alert_from_task_instance": "Alert.from_task_instance (traceback, log_url, hostname)",
        "read_config_and_backend": "read [dingding]/[dingbot] config, import the backend",
        "render_body": "render markdown + JSON body (size check)",
        "http_post": "HTTP POST to the local robot (keep-alive session)",
        "thread_start_join": "run_within: start + join one thread (empty function)",
        "hook_total": f"{line.hook}, all of the above end to end",
        "hook_in_failure_path": f"{line.hook} as the patched {line.failure_path} calls it",
        "failure_path_flags_on": f"{line.failure_path}, ding_on_failure=True (same process)",
        "failure_path_flags_off": f"{line.failure_path}, ding_on_failure=False (same process)",
    }
    text = table(
        ["piece of one alert (patched env, healthy robot)", "median", "p99"],
        [[labels[k], ms(v["median_ms"]), ms(v["p99_ms"])] for k, v in parts.items()],
    )
    on_off = parts["failure_path_flags_on"]["median_ms"] - parts["failure_path_flags_off"]["median_ms"]
    return text + f"\n(flags on - flags off, same process: {on_off:+.1f} ms)"


def counts(res: dict, profile: Profile) -> str:
    """How many calls each figure is made of, and what the robots received."""
    hf, sil, fo, d = res["healthy"], res["silent"], res["fan_out"], res["delivered"]
    return (
        f"healthy robot: {hf[U]['n']} + {hf[P]['n']} timed calls (unpatched + patched), warm-up "
        f"{profile.healthy_warmup} calls before each of {profile.healthy_rounds} rounds per environment; "
        f"alerts accepted by the robot: patched {d['healthy'][P][0]}/{d['healthy'][P][1]} calls, "
        f"unpatched {d['healthy'][U][0]}. 3 robots: {fo['n']} timed calls in the patched environment, "
        f"in the same rounds (A B C / C B A), default_conn_id naming {fo['robots']} (Connections; "
        f"DingTalk and Feishu signed, with the keyword); alerts accepted by each: "
        + ", ".join(f"{robot} {got}/{fo['calls']}" for robot, got in fo["received"].items())
        + f" calls. Silent robot: {sil[P]['n']} calls per environment; requests it "
        f"received: patched {d['silent'][P]}, unpatched {d['silent'][U]}."
    )
