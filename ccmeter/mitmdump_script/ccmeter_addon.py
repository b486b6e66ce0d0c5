"""``mitmdump -s "$(ccmeter addon)"``: the same addon as ``ccmeter run``, from an install."""

from ccmeter.addon import addons  # noqa: F401
