"""Latent Skill Planning on a faithful TF2 Dreamer. Importing the package loads nothing heavy."""
