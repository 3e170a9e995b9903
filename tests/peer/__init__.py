"""pymongo's own test suite run against the embedded server (``tox -e peer``)."""
