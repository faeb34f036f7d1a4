"""Device side of cupmon: wire protocol, codec, serial link, reference firmware.

Imports neither Qt nor anything from ``monitor`` or ``sim``.
"""
