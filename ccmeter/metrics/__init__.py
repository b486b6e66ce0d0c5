"""ccmeter's figures for the monitoring people already run (docs/metrics.md).

- :mod:`.snapshot` reads them from the database: every finished call summed per label set
  (one statement) and every cap's spend, limit and what remains (the caps' own code);
- :mod:`.prom` serves them to Prometheus (a collector that reads a snapshot per scrape) and
  writes them to a node_exporter textfile.

Counters come from the database, not from one process's memory: several proxies sharing a
database each expose the same totals, and a textfile written by cron needs no proxy.
"""
