"""Shared test set-up: Qt always offscreen, never a real display."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
