"""`python -m dreamer_lsp ...` trains an agent; see dreamer_lsp.train."""

from dreamer_lsp.train import main

# Guarded: environment workers are spawned and re-import the main module.
if __name__ == '__main__':
    main()
