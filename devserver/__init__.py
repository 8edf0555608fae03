"""Local run: Datastore emulator, demo PKI, demo mTLS peer, demo data."""
