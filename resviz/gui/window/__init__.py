"""The main window and what frames the graph: the open document, menus and toolbar, banner, shape field, theme and reload-on-save."""
