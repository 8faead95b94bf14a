"""Subcommands of the `specroll` CLI, one module each, each exposing ``register(subparsers)``."""
