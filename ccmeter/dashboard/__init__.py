"""The local dashboard (``ccmeter dashboard``) and the HTML report (``report --format html``).

- :mod:`.svg` draws charts (pure functions, no I/O);
- :mod:`.data` gathers each page's figures from the CLI's own report functions;
- :mod:`.layout` and :mod:`.pages` turn them into HTML; :mod:`.export` the report file;
- :mod:`.server` serves the pages on loopback, read-only.
"""
