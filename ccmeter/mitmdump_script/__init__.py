"""Holds only the script file for ``mitmdump -s "$(ccmeter addon)"`` in an installed ccmeter.

mitmproxy puts a script's folder first on ``sys.path``; this folder holds nothing else, so
no module of ours can shadow another package's.
"""
