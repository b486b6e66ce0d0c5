"""One module per command group; ``ccmeter.cli`` wires them into the root app."""
