"""Payment: consumes payment commands and creates payment sessions."""
