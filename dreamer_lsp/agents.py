"""Builds the agent a config asks for."""

from dreamer_lsp.dreamer import Dreamer
from dreamer_lsp.lsp import LSP


def make_agent(config, obs_space, action_size):
    """Dreamer when `skills.high_level` is none, else the LSP agent with that high level."""
    if config.skills.high_level == 'none':
        return Dreamer(config, obs_space, action_size)
    return LSP(config, obs_space, action_size)
