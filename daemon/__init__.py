"""The I/O shell: probing, encoding, verifying and (later) watching, queueing and working."""
