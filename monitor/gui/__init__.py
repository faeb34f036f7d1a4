"""Qt (PySide6 + pyqtgraph) user interface. The only package that imports Qt."""
