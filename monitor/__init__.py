"""cupmon's monitor: checking, alarms, session store, replay, CLIs, and the GUI.

Nothing outside ``monitor.gui`` imports Qt; this package imports without a display.
"""
