"""Modal screens: approvals and the session picker."""
