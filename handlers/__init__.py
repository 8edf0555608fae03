"""Thin webapp2 handlers: pages, JSON API, auth and CSRF."""
