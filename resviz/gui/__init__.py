"""The desktop app: the only package that imports PySide6 and pyqtgraph.

Importing it changes nothing in the process; the app's start (:func:`resviz.gui.app._application`)
takes the one compatibility step a broken PySide6 release needs (:mod:`resviz.gui.runtime.pyside_compat`).
"""
