"""Every MongoDB call mongoreact makes lives in this package."""
