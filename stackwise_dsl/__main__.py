"""`python -m stackwise_dsl`: the same app as the `sw` command."""

from stackwise_dsl.cli import main

main()
