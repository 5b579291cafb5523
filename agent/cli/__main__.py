"""`python -m agent.cli`: the `agent` command."""

from agent.cli import main

main()
