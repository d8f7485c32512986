"""The registry of custom tasks, and the keyword parameters each one accepts.

A domain's custom tasks live in their own module (`quadruped_tasks`, `cartpole_tasks`), which
has a `TASKS` dict from task name to `dm_control` task class and a `load(name, seed, **params)`.
Importing this module never imports dm_control; `module` imports a domain's module on demand.
"""

import importlib
import inspect

MODULES = {
    'quadruped': 'dreamer_lsp.quadruped_tasks',
    'cartpole': 'dreamer_lsp.cartpole_tasks',
}


def module(domain):
    """The module of `domain`'s custom tasks (imports dm_control)."""
    return importlib.import_module(MODULES[domain])


def task_params(domain, tasks, name):
    """The parameter names and defaults of the custom task `name` of `domain`.

    tasks: the domain's `TASKS` dict. An unknown name raises ValueError naming the valid ones.
    """
    if name not in tasks:
        raise ValueError(f'Unknown {domain} task {name!r}; valid tasks: {", ".join(tasks)}')
    signature = inspect.signature(tasks[name].__init__)
    return {
        key: value.default
        for key, value in signature.parameters.items()
        if key not in ('self', 'random')
    }


def build_task(domain, tasks, name, seed, params):
    """The task `name` built with `params`, which must be among its parameters.

    An unknown task or parameter raises ValueError naming the valid ones.
    """
    valid = task_params(domain, tasks, name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f'Unknown parameter(s) {", ".join(unknown)} for {domain} task {name!r}; '
            f'valid: {", ".join(valid) or "none"}'
        )
    return tasks[name](random=seed, **params)
