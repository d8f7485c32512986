"""Builds the agent a config asks for."""

from dreamer_lsp.dreamer import Dreamer


def make_agent(config, obs_space, action_size):
    """The agent for `config`: plain Dreamer."""
    return Dreamer(config, obs_space, action_size)
