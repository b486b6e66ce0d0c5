"""ccmeter: meter and cap what Claude Code costs, per project, session and model."""

__version__ = "0.1.0"
