"""The block graph on screen: the scene's items, the view (zoom, pan, find, mini-map) and saving it as a picture."""
