"""Make the dashboard screenshots in docs/images (light and dark) from a realistic database.

Usage: ``python tests/dashboard_screenshots.py [docs/images]`` (needs chromium and
chromium-driver, as the browser tests). Runs in a throw-away HOME; your data is not read.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent / "docs" / "images").resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="ccmeter-shots-")
    os.environ["HOME"] = home
    for name in ("CCMETER_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        os.environ.pop(name, None)

    from browser import chromium
    from realistic_db import fill_realistic, realistic_rows

    from ccmeter import config, store
    from ccmeter.dashboard.server import make_server

    now = time.time()
    fill_realistic(now)
    # a subscriber's plan headers on the newest session, so the plan page has windows
    rng = random.Random(3)
    rows = [r for r in realistic_rows(now, seed=11) if r["started_ts"] > now - 4 * 3600][:40]
    util = 0.1
    for index, row in enumerate(sorted(rows, key=lambda r: r["started_ts"])):
        util = min(0.95, util + rng.uniform(0.005, 0.02))
        row.update(call_uid=f"plan-{index}", plan_5h_utilization=round(util, 3),
                   plan_5h_reset=int(now + 2 * 3600), plan_7d_utilization=round(util / 3, 3),
                   plan_7d_reset=int(now + 4 * 86400), plan_binding_window="five_hour")
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, rows)
    finally:
        db.conn.close()
    config.paths().config_dir.mkdir(parents=True, exist_ok=True)
    config.paths().config_file.write_text(
        '[caps]\ndaily = "15"\nweekly = "60"\nmonthly = "200"\nnotify = false\n')
    srv = make_server(config.paths().db_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    conn = store.connect_reader(config.paths().db_file)
    session = conn.execute("SELECT session_id FROM api_calls GROUP BY 1 "
                           "ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]
    conn.close()
    pages = {"overview": "/", "session": f"/session/{session[:8]}", "caps": "/caps"}
    for dark in (False, True):
        with chromium(dark=dark, width=1200, height=860) as driver:
            for name, path in pages.items():
                driver.get(srv.url.rstrip("/") + path)
                target = out / f"dashboard-{name}{'-dark' if dark else ''}.png"
                driver.save_screenshot(str(target))
                print(f"{target} {target.stat().st_size // 1024} KB")
    srv.shutdown()


if __name__ == "__main__":
    main()
