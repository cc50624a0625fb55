"""Render: pure functions of records to DOT text, rich renderables and files."""
