"""The Textual app: renders a session's event stream, asks for approvals (see tui.app)."""
