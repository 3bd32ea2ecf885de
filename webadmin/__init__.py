"""WebAdmin: the Flask application for partners and archive users (see issue 4)."""
