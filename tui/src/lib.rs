//! stoker-tui: the terminal dashboard over the collector, and the one-machine demo.
