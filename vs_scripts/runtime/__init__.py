"""What runs inside vspipe: filter helpers imported by generated scripts, and the networks.
Never writes to stdout (it carries the y4m stream)."""
