"""dyncert: client certificates from memory for Python 3's ssl (exports filled in by the lead)."""
