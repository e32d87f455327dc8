"""One module per deployment runtime; see seglite.export.FORMATS."""
