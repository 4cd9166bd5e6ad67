"""Helpers for the tests: member_proc.py (run as a script) and lineproc (imported by the conftests)."""
