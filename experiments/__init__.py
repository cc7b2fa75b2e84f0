"""Experiments that run the whole tool end to end and print what they measured (`make reproduce`)."""
