"""Make docs/grafana/screenshot.png: the dashboard's queries in Prometheus' own graph view.

Grafana is not packaged for Debian, so the picture is Prometheus' graph page (headless
Chromium) showing the same PromQL as four of the dashboard's panels, over a real
``ccmeter serve --metrics-port`` that the tests' stand-in API answers calls through for
``--minutes`` minutes (several projects and models, a daily cap on one project).

    python docs/grafana/screenshot.py            # needs prometheus and chromium on PATH
    python docs/grafana/screenshot.py --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mitm import free_port, wait_for_port  # noqa: E402
from promserver import Prometheus  # noqa: E402
from standin import StandIn, message_events, sse_reply  # noqa: E402

PANELS = [  # (the dashboard panel's title, its PromQL with $project = all)
    ("Spend by model (USD, cumulative)", "sum by (model) (ccmeter_cost_usd_total)"),
    ("Spend rate by project (USD/hour)",
     "sum by (project) (rate(ccmeter_cost_usd_total[1m])) * 3600"),
    ("Tokens per second by type", "sum by (type) (rate(ccmeter_tokens_total[1m]))"),
    ("Caps: spend in the current window (USD)", "ccmeter_cap_spend_usd"),
]
MODELS = ["claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"]
PROJECTS = ["web", "api-server", "infra"]


def answer(rec):
    body = rec.json or {}
    size = body.get("max_tokens", 1000)
    return sse_reply(message_events(body.get("model"), input_tokens=size // 10,
                                    cache_read=size * 8, cache_write_5m=size // 2,
                                    output_tokens=size // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=HERE / "screenshot.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="ccmeter-screenshot-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCMETER_", "XDG_"))}
    env["HOME"] = str(work / "home")
    config_dir = work / "home" / ".config" / "ccmeter"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(
        '[caps]\nnotify = false\ndaily = "50"\n[caps.projects.infra]\ndaily = "5"\n')
    metrics_port, port = free_port(), free_port()
    rng = random.Random(18)
    with StandIn() as standin:
        standin.default = answer
        serve = subprocess.Popen(
            [sys.executable, "-m", "ccmeter.entry", "serve", "--reverse", "--upstream",
             standin.url, "--port", str(port), "--metrics-port", str(metrics_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(metrics_port, proc=serve)
            with Prometheus(work / "prometheus", [f"127.0.0.1:{metrics_port}"]) as prom:
                import http.client

                end = time.monotonic() + args.minutes * 60
                while time.monotonic() < end:
                    project = rng.choice(PROJECTS)
                    model = rng.choices(MODELS, weights=[2, 5, 3])[0]
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("POST", "/v1/messages", body=json.dumps({
                        "model": model, "max_tokens": rng.randint(200, 8000), "stream": True,
                        "tools": [{"name": "t"}],
                        "messages": [{"role": "user", "content": "hi"}]}), headers={
                        "content-type": "application/json", "x-api-key": "sk-ant-api03-x",
                        "x-ccmeter-project": project,
                        "x-claude-code-session-id": f"s-{project}"})
                    conn.getresponse().read()
                    conn.close()
                    time.sleep(rng.uniform(0.1, 0.6))
                query = {}
                for i, (_, expr) in enumerate(PANELS):
                    query.update({f"g{i}.expr": expr, f"g{i}.tab": "0",
                                  f"g{i}.range_input": f"{max(1, round(args.minutes))}m",
                                  f"g{i}.stacked": "0", f"g{i}.show_exemplars": "0"})
                url = f"{prom.url}/graph?{urllib.parse.urlencode(query)}"
                subprocess.run(
                    [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--hide-scrollbars",
                     f"--user-data-dir={work / 'chromium'}", "--virtual-time-budget=15000",
                     f"--screenshot={args.out}", "--window-size=1400,3100", url],
                    check=True, timeout=120, capture_output=True)
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(30)
    print(args.out)


if __name__ == "__main__":
    main()
