"""Command-line tools: ``gensemcom <command> ...``; each command is a module with ``main(argv)``."""
