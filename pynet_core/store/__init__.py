"""Key-value stores behind one contract (see api.py)."""
